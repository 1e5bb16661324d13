"""mnistflow: a reproducible, orchestrated Keras training pipeline for MNIST.

The library, a package per concern: `data` (data in), `validation` (the data checks),
`reference` (the accepted reference they compare with), `training`, `evaluation`, `release`
(export, gates, int8, records, registry, verify), `serving` (prediction time: inputs,
onnxruntime, the inbox), `orchestration` (DVC and Prefect plumbing), `reporting`, `compute`
(what computes the numbers), and a small `core`; `constants`, `errors`, `params` and `paths`
are what every layer shares. The DVC stages in `stages/` and the Prefect flows in `flows/`
are thin wiring over it.
"""
