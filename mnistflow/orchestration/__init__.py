"""DVC and Prefect plumbing: the project on disk and its stages, DVC from Python, remotes,
the Prefect home, one writer per workspace, no orphan processes, a stage's entry point and
stderr, and what a Prefect API caller may ask."""
