#!/usr/bin/env bash
# The test command: set up (cached), start the local stack, lint, run every test tier, stop the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --test-tools

started_here=0
if ! .venv/bin/ragstream stack status >/dev/null 2>&1; then
  started_here=1
fi
cleanup() { if [ "$started_here" = 1 ]; then .venv/bin/ragstream stack down || true; fi; }
trap cleanup EXIT

echo "==> stack up (first run builds Weaviate with go install and resolves the Kafka jars: ~5-8 min)"
.venv/bin/ragstream stack up

echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "==> pytest (unit, component, integration, e2e)"
.venv/bin/pytest "$@"
