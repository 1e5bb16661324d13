"""Data in: where MNIST comes from (sources, IDX, ingest), the two pixel scales, the
normalization, and the prepared splits the model trains on."""
