"""The one error the stack raises: a service that could not start, answer or stop."""

from __future__ import annotations


class StackError(RuntimeError):
    """A message naming the service, what failed and what was expected (and its log)."""
