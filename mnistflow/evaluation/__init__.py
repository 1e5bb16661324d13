"""Evaluation: test-set metrics and pictures of what went wrong."""
