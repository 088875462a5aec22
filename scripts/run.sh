#!/usr/bin/env bash
# Install memplan and run it: with no arguments, start the service (the HTTP API and the calculator page at
# http://127.0.0.1:8000/, settings from MEMPLAN_* variables); with arguments, run `memplan ARGS...`
# (e.g. `bash scripts/run.sh estimate examples/llama3-8b-qlora-t4.yaml`). No network is needed at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ "$#" -eq 0 ]; then
  exec memplan serve
else
  memplan "$@"
fi
