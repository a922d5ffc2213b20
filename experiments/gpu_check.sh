#!/usr/bin/env bash
# The GPU table in one command (about 8 minutes on one H100/H200): B/16 and L/16 bf16 training
# img/s and MFU at 256 and 512 per GPU, remat none vs dots, cuDNN vs XLA attention, inference
# img/s, the device-RandAugment share of the step, dropout on vs off, and the memory planner's
# prediction against the measured peak. Every row runs in its own process and is appended to
# experiments/results/gpu_check.jsonl as it finishes; gpu_check.md is the table with the
# comparisons (versions, XLA flags and cuDNN recorded in both).
#
#   bash experiments/gpu_check.sh                 # on the GPU machine
#   bash experiments/gpu_check.sh --dry-run       # the same rows on CPU at tiny size
#   OUT=/tmp/check bash experiments/gpu_check.sh --dry-run
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=false
if [[ "${1:-}" == "--dry-run" ]]; then
  dry_run=true
fi
out="${OUT:-experiments/results}"
rows="$(mktemp)"
trap 'rm -f "${rows}"' EXIT

# name, variant, batch per GPU, remat, attention, dropout, randaug, check against plain JAX
cat > "${rows}" <<'ROWS'
[
 {"name": "b16_256", "variant": "B/16", "batch_per_device": 256, "check": true},
 {"name": "b16_512", "variant": "B/16", "batch_per_device": 512, "check": false},
 {"name": "b16_256_dots", "variant": "B/16", "batch_per_device": 256, "remat": "dots", "check": false},
 {"name": "b16_512_dots", "variant": "B/16", "batch_per_device": 512, "remat": "dots", "check": false},
 {"name": "b16_256_xla", "variant": "B/16", "batch_per_device": 256, "attention": "xla", "check": false},
 {"name": "b16_256_dropout", "variant": "B/16", "batch_per_device": 256, "dropout": 0.1, "check": false},
 {"name": "b16_256_randaug", "variant": "B/16", "batch_per_device": 256, "randaug": true, "check": false},
 {"name": "l16_256", "variant": "L/16", "batch_per_device": 256, "check": true},
 {"name": "l16_512_dots", "variant": "L/16", "batch_per_device": 512, "remat": "dots", "check": false}
]
ROWS

if "${dry_run}"; then
  # The same rows on the CPU: 2-layer width-32 models, 32x32 images, 2 images per device.
  python - "${rows}" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
for row in rows:
  row.update(batch_per_device=2 * (2 if row['batch_per_device'] == 512 else 1), image_size=32,
             iters=2)
json.dump(rows, open(sys.argv[1], 'w'))
PY
  JAX_PLATFORMS=cpu python experiments/bench/harness.py --rows="${rows}" --tiny --iters=2 \
    --timeout=300 --out="${out}" --tag=gpu_check_dryrun
else
  python experiments/bench/harness.py --rows="${rows}" --iters=10 --timeout=420 \
    --out="${out}" --tag=gpu_check
fi
