#!/usr/bin/env bash
# The device command: installs the carried wheels (.whl/, from wheels.sh) into a private
# target, then runs one part of the GPU table. On the device machine, with `.whl` carried:
#
#   bash experiments/device/run.sh first     # then: bash experiments/device/run.sh second
#   bash experiments/device/run.sh first --dry-run    # the same on CPU (rehearse.sh runs it)
#
# Results land under $OUT (the device tool's folder that comes back), else experiments/results.
set -euo pipefail
cd "$(dirname "$0")/../.."
site="${DEVICE_SITE:-/tmp/site}"
shopt -s nullglob
wheels=(.whl/*.whl)
if (( ${#wheels[@]} == 0 )); then
  echo "error: no wheels in .whl/: run bash experiments/device/wheels.sh here and carry .whl" >&2
  exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "${site}" "${wheels[@]}"
export PYTHONPATH="${site}:${PWD}${PYTHONPATH:+:${PYTHONPATH}}"
python3 -c "import sys, jax; print('python', sys.version.split()[0], '| jax', jax.__version__, '|', jax.devices())"
exec bash experiments/gpu_check.sh "$@"
