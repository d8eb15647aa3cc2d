"""Checkpoints -> ONNX (parity-checked against torch) -> TensorRT plans -> a Triton model repository."""
