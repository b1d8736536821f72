#!/usr/bin/env bash
# Regenerate the profiles shipped in profiles/ for this machine's CPU (ONNX Runtime, fp32, batch 1,
# each model at its own resolution). Run from the repository root: bash tools/make_profiles.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for model in mobilenet_v2 resnet34 efficientnet_lite0; do
  EDGEPRUNE_PROFILES=profiles edgeprune profile --model "$model" --backend onnxruntime "$@"
done
