"""Serving: ONNX export and its gates, prediction input readers, onnxruntime prediction."""
