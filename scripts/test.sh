#!/usr/bin/env bash
# Fresh machine: installs what the tests need, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
MOODSHIFT_BROWSER=1 MOODSHIFT_EXTRAS=dev,ray bash scripts/setup.sh
# The tests compare the shipped musicnn weights with the original checkpoints inside the
# musicnn wheel (a test-only need: moodshift itself never imports it; TensorFlow stays out).
.venv/bin/pip install -q --no-deps musicnn==0.1.0
exec .venv/bin/python -m pytest -q "$@"
