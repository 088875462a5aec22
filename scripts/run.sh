#!/usr/bin/env bash
# Install memplan and run it: with no arguments, estimate and check the bundled example job
# (QLoRA of Llama-3.1-8B on a T4); with arguments, run `memplan ARGS...`. No network is needed at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ "$#" -eq 0 ]; then
  memplan estimate examples/llama3-8b-qlora-t4.yaml
  memplan check examples/llama3-8b-qlora-t4.yaml
else
  memplan "$@"
fi
