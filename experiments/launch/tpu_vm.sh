#!/usr/bin/env bash
# A Cloud TPU VM slice: the same command on every worker; JAX detects the TPU pod by itself.
#
#   TPU_NAME=my-v5e-64 ZONE=us-west4-a experiments/launch/tpu_vm.sh setup
#   TPU_NAME=my-v5e-64 ZONE=us-west4-a CONFIG=configs/pretrain_i21k.py \
#       WORKDIR=gs://my-bucket/runs/i21k experiments/launch/tpu_vm.sh run [--config.x=y ...]
#
# `setup` installs the package on every worker (REPO_URL, default the current origin); `run`
# starts training. Preemption (a maintenance event or a spot VM reclaimed) is a SIGTERM: every
# process saves the same step and exits 0; run the same command again to resume.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU VM zone}"
REPO_DIR="${REPO_DIR:-vit_jax}"
action="${1:-}"
shift || true

on_all_workers() {
  gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${ZONE}" --worker=all --command="$1"
}

case "${action}" in
  setup)
    repo_url="${REPO_URL:-$(git remote get-url origin)}"
    on_all_workers "git clone $(printf '%q' "${repo_url}") ${REPO_DIR} 2>/dev/null || git -C ${REPO_DIR} pull; pip install -e './${REPO_DIR}[tpu]'"
    ;;
  run)
    : "${CONFIG:?set CONFIG to a recipe, e.g. CONFIG=configs/pretrain_i21k.py}"
    : "${WORKDIR:?set WORKDIR to a gs:// run directory}"
    extra=""
    for argument in "$@"; do
      extra+=" $(printf '%q' "${argument}")"
    done
    on_all_workers "cd ${REPO_DIR} && eval \"\$(python -m vit_jax.parallel.xla_flags)\" && python -m vit_jax.main --config=$(printf '%q' "${CONFIG}") --workdir=$(printf '%q' "${WORKDIR}")${extra}"
    ;;
  *)
    echo "usage: $0 setup|run [vit_jax.main arguments]" >&2
    exit 2
    ;;
esac
