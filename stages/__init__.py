"""DVC stages of the mnistflow pipeline: one module per stage, plus shared helpers."""
