#!/usr/bin/env bash
# README command 1: install everything, create the demo database (SQLite unless
# DATABASE_URL says otherwise), load the 10,000-package sample, build its
# vector index and show the nearest neighbours of one package.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/python manage.py migrate --noinput --verbosity 0
.venv/bin/python manage.py load_sample --no-progress
.venv/bin/python manage.py vectorindex build package_embedding
.venv/bin/python manage.py vectorindex status package_embedding
.venv/bin/python manage.py neighbours "${1:-arrow}"
