"""The layout keeps its promises: no import cycles, backend differences only in the dialects, no wiring at import."""

import ast
from pathlib import Path

import vectorindex

# The package as imported: the source tree, or the installed wheel when the suite runs against it.
PACKAGE = Path(vectorindex.__file__).resolve().parent


def modules() -> dict[str, tuple[Path, ast.Module, bool]]:
    """Module name -> (path, syntax tree, is a package), for every module of vectorindex but its migrations."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if "migrations" in parts:
            continue
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, ast.parse(path.read_text(), str(path)), package)
    return found


def imports(name: str, tree: ast.Module, package: bool, known: set[str]) -> set[str]:
    """The modules of the package that *name* imports, at module level or in a function (not for type checking)."""

    def deepest(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    base = name.split(".") if package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.Import):
            found.update(deepest(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                source = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            found.update(deepest(f"{source}.{alias.name}") for alias in node.names)
    return found - {None, name}


def test_no_module_imports_one_that_imports_it_back():
    found = modules()
    edges = {name: imports(name, tree, package, set(found)) for name, (_path, tree, package) in found.items()}
    cycles = []

    def visit(name: str, path: list[str], done: set[str]) -> None:
        for target in sorted(edges[name]):
            if target in path:
                cycles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in done:
                visit(target, path + [target], done)
        done.add(name)

    done: set[str] = set()
    for name in sorted(edges):
        if name not in done:
            visit(name, [name], done)
    assert len(edges) > 50 and sum(map(len, edges.values())) > 150  # the graph was read
    assert cycles == []


def test_the_backends_differ_only_in_their_dialects():
    asks = []
    for name, (path, _tree, _package) in modules().items():
        if name.startswith("vectorindex.storage.dialects"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "vendor ==" in line or "vendor !=" in line or "vendor in" in line or ".mysql" in line:
                asks.append(f"{name}:{number}: {line.strip()}")
    assert asks == []


def test_nothing_is_connected_or_patched_when_a_module_is_imported():
    wiring = []
    for name, (_path, tree, _package) in modules().items():
        for node in tree.body:  # module-level statements only; ready() does the wiring
            call = node.value if isinstance(node, ast.Expr) else None
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "connect":
                wiring.append(f"{name}: {ast.unparse(call)}")
            if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Attribute) and ast.unparse(target).startswith(("models.", "django."))
                for target in node.targets
            ):
                wiring.append(f"{name}: {ast.unparse(node)}")
    assert wiring == []
