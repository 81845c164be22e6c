#!/usr/bin/env bash
# Fresh machine: installs what the tests need, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
MOODSHIFT_BROWSER=1 MOODSHIFT_EXTRAS=dev,ray bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
