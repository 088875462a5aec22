#!/usr/bin/env bash
# Install memplan into the current Python environment (activate a virtualenv first if you want one).
#   scripts/install.sh        the library and the `memplan` command
#   scripts/install.sh test   plus the test dependencies (pytest, hypothesis, peft, deepspeed, playwright) and
#                             Debian's chromium for the browser tests (apt-get, where it is missing)
# Where no torch is installed, the CPU build is installed first, so pip does not pull gigabytes of CUDA wheels;
# an existing torch (a CUDA build included) is left alone. MEMPLAN_TORCH_INDEX_URL picks the index for that
# first install (e.g. https://download.pytorch.org/whl/cpu where the default index serves CUDA builds).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "memplan install: no torch found, installing the CPU build torch==${MEMPLAN_TORCH_VERSION:-2.13.0}"
  pip_install ${MEMPLAN_TORCH_INDEX_URL:+--index-url "$MEMPLAN_TORCH_INDEX_URL"} "torch==${MEMPLAN_TORCH_VERSION:-2.13.0}"
fi
if [ "${1:-}" = "test" ]; then
  # the browser tests drive Debian's chromium through Playwright (a Playwright browser download does not work
  # offline); install it where it is missing and apt can
  if [ ! -x /usr/bin/chromium ] && [ -z "${MEMPLAN_SKIP_BROWSER:-}" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "memplan install: installing Debian's chromium for the browser tests"
    $SUDO apt-get install -y -q chromium >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null 2>&1 \
      && $SUDO apt-get install -y -q chromium >/dev/null; } \
      || echo "memplan install: could not install chromium (the browser tests will fail; MEMPLAN_SKIP_BROWSER=1 skips them)"
  fi
  # deepspeed ships only an sdist whose setup.py imports torch: build it against the torch above, ops off
  DS_BUILD_OPS=0 pip_install --no-build-isolation "deepspeed==0.19.8"
  pip_install -e ".[test]"
else
  pip_install -e .
fi
"$PY" -c "import memplan, torch; print(f'memplan {memplan.__version__} installed (torch {torch.__version__})')"
