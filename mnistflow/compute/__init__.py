"""What computes the numbers: the CPU's features, the oneDNN kernels and threads a stage
allows, and the fingerprint (reports/compute.json) the stages that compute depend on."""
