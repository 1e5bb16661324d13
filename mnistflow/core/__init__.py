"""The small shared core: atomic and durable writes, content hashes, git, and onnxruntime
over many images for the pipeline's own judgements."""
