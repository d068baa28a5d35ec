#!/usr/bin/env bash
# Builds the wheel, installs it into a new virtualenv outside the source tree,
# and runs the test suite there against the installed package: a module,
# template or data file missing from the wheel fails here, where the source
# tree would hide it. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

.venv/bin/python -m pip wheel --quiet --no-deps . -w "$work/dist"
rm -rf build ./*.egg-info
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$(ls "$work"/dist/django_vectorindex-*.whl)[mysql,celery,dev]"

# The suite without the package's source beside it; the data set where the tests look for it.
mkdir "$work/run"
cp -r tests demo_project bench pytest.ini manage.py "$work/run/"
find "$work/run" -name __pycache__ -prune -exec rm -rf {} +
[ -e ../shared ] && ln -s "$(cd ../shared && pwd)" "$work/shared"
cd "$work/run"
where=$("$work/venv/bin/python" -c "import vectorindex; print(vectorindex.__file__)")
case "$where" in
    "$work/venv/"*) echo "Testing the installed package: $where" ;;
    *) echo "vectorindex was imported from $where, not from the installed wheel" >&2; exit 1 ;;
esac
"$work/venv/bin/python" -m pytest -p no:cacheprovider "$@"
