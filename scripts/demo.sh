#!/usr/bin/env bash
# The main job: set up (cached), start the whole local platform (Kafka, Weaviate, the model server, every
# consumer as its own process, the gateway), ingest the sample corpus and answer with citations.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ragstream up
.venv/bin/ragstream demo "$@"
