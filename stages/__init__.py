"""The six DVC entry points of the pipeline; the work is done in the mnistflow library."""
