#!/usr/bin/env bash
# PostgreSQL, a Prefect server on it, the process work pool `fleet` and N workers, the catalog-chunk deployment.
# Ctrl-C or SIGTERM stops everything. Options: --workers N --limit N --chunks N --port P --state-dir DIR
# (README, "Scaling out"; deployments/fleet.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m brandforge.deployments.fleet "$@"
