#!/usr/bin/env bash
# Fresh machine: installs what is missing, then runs the end-to-end demo
# (render corpus -> embed -> train -> evaluate) on the built-in audio corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/moodshift demo "$@"
