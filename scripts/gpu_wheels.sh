#!/usr/bin/env bash
# Wheels the lent GPU machine lacks for `memplan profile` (it has torch, accelerate, huggingface_hub, tokenizers,
# safetensors, but no bitsandbytes or pydantic, and older transformers/peft than memplan models), downloaded into
# .whl/ (git-ignored; about 60 MB, under the device tool's 64 MiB). On the device, with `carry: [".whl"]`:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && python3 -m memplan.cli profile --batch profiles/plan.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  bitsandbytes==0.50.2 pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.8.0 typing-inspection==0.4.5 \
  transformers==5.23.0 peft==0.21.2
du -sh .whl
