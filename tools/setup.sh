#!/usr/bin/env bash
# Set up edgeprune on a fresh machine (CPU): Python deps pinned so no CUDA wheels are pulled,
# plus the Debian Fashion-MNIST package used by the demo and the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# torch 2.13.0 is a CPU wheel on these machines; an unpinned torch would pull GBs of CUDA wheels.
$PY -m pip install -q -c constraints.txt torch torchvision
$PY -m pip install -q -c constraints.txt -e ".[dev,lite,bench,fleet]"
# TensorRT's API stubs for the type check, without their dependency on TensorRT itself (GPU only).
$PY -m pip install -q --no-deps "tensorrt-stubs==10.13.0.35.1"
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
    || echo "warning: could not install dataset-fashion-mnist; the demo and benchmarks need it" >&2
fi
