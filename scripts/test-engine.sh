#!/usr/bin/env bash
# The engine without Django: a new virtualenv with numpy, hnswlib and pytest
# only (the versions requirements.txt asks for), where `import django` must
# fail; every module of vectorindex/engine imports there, and the engine's
# tests run there with their own pytest.ini (tests/engine/pytest.ini: no
# settings module). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m venv "$work/venv"
mapfile -t wanted < <(grep -E '^(numpy|hnswlib|pytest)([<>=!~ ]|$)' requirements.txt)
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${wanted[@]}"
if "$work/venv/bin/python" -c "import django" 2>/dev/null; then
    echo "Django is importable in the engine's virtualenv; it must not be" >&2
    exit 1
fi
echo "No Django in $work/venv: $("$work/venv/bin/python" -c "import django" 2>&1 | tail -n 1)"

# From the repository root, so that the source tree's vectorindex is the one imported.
"$work/venv/bin/python" - <<'PYTHON'
import importlib
import pkgutil
import sys

import vectorindex.engine as engine

names = [engine.__name__] + sorted(f"{engine.__name__}.{m.name}" for m in pkgutil.iter_modules(engine.__path__))
for name in names:
    importlib.import_module(name)
django = sorted(name for name in sys.modules if name == "django" or name.startswith("django."))
if django:
    sys.exit(f"importing the engine imported {', '.join(django)}")
print(f"Imported without Django ({len(names)} modules): {', '.join(names)}")
PYTHON

"$work/venv/bin/python" -m pytest -p no:cacheprovider -c tests/engine/pytest.ini tests/engine "$@"
