"""torch -> ONNX (parity-checked) -> TensorRT plans, and the Triton model repository."""
