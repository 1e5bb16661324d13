"""Keras loaded without the integrations no stage uses.

`import keras` imports scikit-learn (for keras.wrappers' SKLearnClassifier) and pandas (so
that fit() takes DataFrames) whenever they are installed, and they are installed here for
validate (cleanlab, Great Expectations). No stage that trains, evaluates or exports uses
either, and together they cost about a second of CPU in each such process
(benchmarks/results/keras_import.md), which the pipeline pays three times a run and the test
suite about ninety times. Keras imports both inside `try: ... except ImportError`, so marking
them absent while Keras loads turns those two integrations off and nothing else; the marks are
taken back at once, so a later explicit import of either still works.

A function rather than an import hook or a patched package: the stages call it where they
already prepare the process for TensorFlow (mnistflow.compute.cpu_kernels), and nothing
changes for a process that imported Keras, scikit-learn or pandas before.
"""

from __future__ import annotations

import sys
from types import ModuleType

# Modules Keras imports only if they are installed (keras/src/wrappers, and
# keras/src/trainers/data_adapters/array_slicing.py).
OPTIONAL_INTEGRATIONS = ("sklearn", "pandas")


def load_keras() -> ModuleType:
    """`import keras`, without whichever of scikit-learn and pandas is not loaded yet (one
    already loaded, Keras uses as usual); Keras as it is when it already is."""
    if "keras" in sys.modules:
        return sys.modules["keras"]
    hidden = [name for name in OPTIONAL_INTEGRATIONS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # `import name` raises ImportError (the import system's rule)
    try:
        import keras
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return keras
