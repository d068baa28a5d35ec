"""The engine is the layer with no Django: every module of it imports in a process that never imports Django."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

IMPORT_ALL = """
import importlib, json, pkgutil, sys
import vectorindex.engine as engine
names = sorted(f"{engine.__name__}.{module.name}" for module in pkgutil.iter_modules(engine.__path__))
for name in names:
    importlib.import_module(name)
loaded = sorted(name for name in sys.modules if name == "django" or name.startswith("django."))
print(json.dumps({"modules": names, "django": loaded}))
"""


def test_every_engine_module_imports_without_django():
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "vectorindex.engine.candidates" in report["modules"] and "vectorindex.engine.head" in report["modules"]
    assert report["django"] == []
