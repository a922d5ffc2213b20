#!/usr/bin/env bash
# The device run, rehearsed on CPU: a virtual environment (Python 3.12, as the image) holding
# only packages the device image holds (image_packages.txt, at the versions this registry has),
# the carried wheels, and then the very command the device call runs, with --dry-run.
#
#   bash experiments/device/rehearse.sh        # both parts; a few minutes the first time
#
# It fails if the environment holds a package the image lacks, if a carried wheel is missing,
# or if either part fails or does not finish inside its budget.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${REHEARSAL_VENV:-/tmp/vit_jax_device_rehearsal}"
python="${REHEARSAL_PYTHON:-python3.12}"
if ! "${python}" -c pass 2>/dev/null; then  # pyenv's interpreter when its shim is not active
  python="$(ls -d "${PYENV_ROOT:-${HOME}/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)"
fi
if [[ -z "${python}" ]]; then
  echo "error: no Python 3.12 here (the device image's); set REHEARSAL_PYTHON" >&2
  exit 2
fi
if [[ ! -x "${venv}/bin/python3" ]]; then
  "${python}" -m venv "${venv}"
fi
# What the benchmark path uses from the image, at the image's versions where they were read
# (KINDS.md: jax 0.11.2, numpy 2.5.2); pip brings their requirements. python-dateutil's newest
# releases require tzdata, which the image does not hold: it goes.
"${venv}/bin/python3" -m pip install -q jax==0.11.2 jaxlib==0.11.2 numpy==2.5.2 flax optax \
  orbax-checkpoint absl-py etils pillow scikit-learn scipy matplotlib pyyaml
"${venv}/bin/python3" -m pip uninstall -q -y tzdata
# Nothing the image lacks: every installed distribution must be on its list.
"${venv}/bin/python3" - <<'PY'
import importlib.metadata, re, sys
sys.path.insert(0, 'experiments/device')
import image_only
held = image_only.image_packages()
extra = sorted({d.metadata['Name'] for d in importlib.metadata.distributions()
                if image_only._normalized(d.metadata['Name']) not in held | {'vit-jax'}})
if extra:
  sys.exit(f'error: the rehearsal environment holds what the device image lacks: {extra}')
print('rehearsal environment: only what the device image holds')
PY
bash experiments/device/wheels.sh
export PATH="${venv}/bin:${PATH}"
for part in first second; do
  start=$(date +%s)
  DEVICE_SITE="${venv}/carried" bash experiments/device/run.sh "${part}" --dry-run
  echo "rehearsal: ${part} took $(( $(date +%s) - start )) s"
done
