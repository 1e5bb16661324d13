"""Data: MNIST sources, checks and summaries, normalization, prepared splits."""
