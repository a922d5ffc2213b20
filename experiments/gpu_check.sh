#!/usr/bin/env bash
# The GPU table in two commands, ordered by value, each inside its own 400 s budget (a device
# command may run 10 minutes; the budget leaves room for the machine's own start-up):
#
#   bash experiments/gpu_check.sh first    # B/16 bf16 at 256 per GPU (cuDNN attention) with its
#                                          # inference and the planner vs the measured peak;
#                                          # B/16 256 remat dots; L/16 256 remat dots
#   bash experiments/gpu_check.sh second   # B/16 256 again (the baseline of this command's
#                                          # ratios), XLA attention, 512 per GPU, device
#                                          # RandAugment, dropout, L/16 512 dots, B/16 512 dots
#   bash experiments/gpu_check.sh first --dry-run    # the same rows on CPU at tiny size
#
# Every row runs in its own process. A row is not started unless its estimated time fits in
# what is left of the budget. As each row finishes, one JSON line is printed, appended to
# $OUT/gpu_check_<part>.jsonl (default OUT: experiments/results), and $OUT/gpu_check_<part>.md
# (the table with versions, XLA flags and the comparisons) is rewritten. The exit status is
# non-zero when any row failed or was skipped, each named with the last line of its error.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

part="${1:-}"
dry_run=false
if [[ "${2:-}" == "--dry-run" ]]; then
  dry_run=true
fi
out="${OUT:-experiments/results}"
budget="${GPU_CHECK_BUDGET_S:-400}"
rows="$(mktemp)"
trap 'rm -f "${rows}"' EXIT

# name, variant, batch per GPU, remat, attention, dropout, randaug, check against plain JAX,
# estimate_s: seconds on one H100/H200 (process start, compile, plain-JAX check, timing).
case "${part}" in
  first) cat > "${rows}" <<'ROWS'
[
 {"name": "b16_256", "variant": "B/16", "batch_per_device": 256, "check": true, "estimate_s": 90},
 {"name": "l16_256_dots", "variant": "L/16", "batch_per_device": 256, "remat": "dots", "check": true, "estimate_s": 150},
 {"name": "b16_256_dots", "variant": "B/16", "batch_per_device": 256, "remat": "dots", "check": false, "estimate_s": 60}
]
ROWS
  ;;
  second) cat > "${rows}" <<'ROWS'
[
 {"name": "b16_256", "variant": "B/16", "batch_per_device": 256, "check": false, "estimate_s": 60},
 {"name": "b16_256_xla", "variant": "B/16", "batch_per_device": 256, "attention": "xla", "check": false, "estimate_s": 60},
 {"name": "b16_512", "variant": "B/16", "batch_per_device": 512, "check": false, "estimate_s": 70},
 {"name": "b16_256_randaug", "variant": "B/16", "batch_per_device": 256, "randaug": true, "check": false, "estimate_s": 70},
 {"name": "b16_256_dropout", "variant": "B/16", "batch_per_device": 256, "dropout": 0.1, "check": false, "estimate_s": 60},
 {"name": "l16_512_dots", "variant": "L/16", "batch_per_device": 512, "remat": "dots", "check": false, "estimate_s": 110},
 {"name": "b16_512_dots", "variant": "B/16", "batch_per_device": 512, "remat": "dots", "check": false, "estimate_s": 70}
]
ROWS
  ;;
  *) echo "usage: bash experiments/gpu_check.sh first|second [--dry-run]" >&2; exit 2 ;;
esac

if "${dry_run}"; then
  # The same rows on the CPU: 2-layer width-32 models, 32x32 images, 2 images per device.
  python3 - "${rows}" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
for row in rows:
  row.update(batch_per_device=2 * (2 if row['batch_per_device'] == 512 else 1), image_size=32,
             iters=2, estimate_s=30)
json.dump(rows, open(sys.argv[1], 'w'))
PY
  JAX_PLATFORMS=cpu python3 experiments/bench/harness.py --rows="${rows}" --tiny --iters=2 \
    --timeout=300 --budget="${budget}" --out="${out}" --tag="gpu_check_${part}_dryrun"
else
  python3 experiments/bench/harness.py --rows="${rows}" --iters=10 --timeout=300 \
    --budget="${budget}" --out="${out}" --tag="gpu_check_${part}"
fi
