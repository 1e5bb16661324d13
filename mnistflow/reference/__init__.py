"""The accepted reference the data checks compare with: its folder, its profile and the
features it is built from, drift distances, near-duplicates, the label model and its fit,
and `mnistflow reference accept`."""
