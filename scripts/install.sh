#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine: the system
# packages mysqlclient compiles against, and a virtualenv (.venv) with
# requirements.txt. Safe to run again: it only installs what is missing.
# PYTHON and VENV choose another interpreter and virtualenv folder.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=${VENV:-.venv}

missing=()
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null \
    || missing+=(libmariadb-dev)
command -v gcc >/dev/null 2>&1 || missing+=(build-essential)
"$python" -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "Installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
echo "Installing Python packages into $venv (hnswlib and mysqlclient compile from source the first time)..."
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
