#!/usr/bin/env bash
# The GPU check (tools/gpu_check.py says what each step does): installs the gpu and tensorrt
# extras, then profiles, adapts, builds and checks TensorRT engines and writes one JSON summary.
#
#   bash tools/gpu_check.sh [--out DIR] [--weights PATH] [--no-install] [--dry-run]
#
# --dry-run: CPU only, nothing installed; GPU steps are recorded as "not run: no GPU".
# --no-install: the extras are already installed (e.g. a machine without network).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
install=1
args=()
for a in "$@"; do
  case "$a" in
    --no-install) install=0 ;;
    --dry-run) install=0; args+=("$a") ;;
    *) args+=("$a") ;;
  esac
done
if [ "$install" -eq 1 ]; then
  echo "installing the gpu and tensorrt extras" >&2
  # onnxruntime and onnxruntime-gpu share one import name: the GPU build must be installed last.
  $PY -m pip install -q -e ".[gpu,tensorrt,dev]" || { echo "error: installing the extras failed" >&2; exit 1; }
  $PY -m pip install -q --force-reinstall --no-deps "onnxruntime-gpu>=1.18" \
    || { echo "error: reinstalling onnxruntime-gpu failed" >&2; exit 1; }
fi
exec $PY tools/gpu_check.py "${args[@]}"
