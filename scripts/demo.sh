#!/usr/bin/env bash
# The main job: set up (cached), start the local stack, run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ragstream stack up
.venv/bin/ragstream demo "$@"
