#!/usr/bin/env bash
# Downloads, for the device image's Python (CPython 3.12, manylinux x86_64), the wheel of every
# package in carried.txt (what the benchmark path imports that the image lacks) into .whl/ at
# the repository root (ignored by git; the device call carries it). Needs the package registry.
#
#   bash experiments/device/wheels.sh          # -> .whl/*.whl
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
packages=()
while read -r line; do
  line="${line%%#*}"
  line="${line// /}"
  [[ -n "${line}" ]] && packages+=("${line}")
done < experiments/device/carried.txt
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "${tag}")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d .whl "${packages[@]}"
ls .whl
