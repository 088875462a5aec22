#!/usr/bin/env bash
# Install memplan with its test dependencies and run every test. No network is used by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -m pytest -q -p no:cacheprovider "$@"
