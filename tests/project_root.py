"""The checkout the tests run in: the installed package does not know where it came from."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
