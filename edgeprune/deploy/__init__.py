"""Deployable artifacts: ONNX export and parity, TensorRT engines, atomic output folders."""
