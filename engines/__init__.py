"""The inference contract and its backends (embedded onnxruntime, Triton). Never imports torch."""
