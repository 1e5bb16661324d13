"""What leaves the pipeline, and how it is judged and kept: ONNX export, the quality and
parity gates, int8 quantization and its gate, the export stage's candidates, recorded runs,
the GTO registry, lineage, who publishes, and `mnistflow verify`."""
