#!/usr/bin/env bash
# On a lent GPU machine (the device tool, with carry [".whl"] from scripts/gpu_wheels.sh): install the carried
# wheels once per machine, record the plan's runs not yet in profiles/ or .runs/ into .runs/ (kept while the
# machine stays warm), starting none after BUDGET_S seconds, and pack .runs/ into $OUT/runs.tgz (the tool returns
# at most 8 files). Usage: bash scripts/gpu_profile.sh [BUDGET_S] [GLOBS]
set -uo pipefail
cd "$(dirname "$0")/.."
budget=${1:-480}
only=${2:-}
if [ ! -d /tmp/site/bitsandbytes ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p .runs
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
# the guard stops a run that would outlast the call; the batch itself starts none after the budget
timeout $((budget + 100)) python3 -m memplan.cli profile --batch profiles/plan.yaml --out-dir .runs \
  --budget-s "$budget" ${only:+--only "$only"} 2>&1 | tee -a .runs/log.txt
tar czf "${OUT:-/tmp}/runs.tgz" .runs
ls .runs | grep -c json
