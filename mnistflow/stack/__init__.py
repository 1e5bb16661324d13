"""THE TEAM'S STACK on real engines, on loopback in one folder: PostgreSQL behind one Prefect
server, SeaweedFS as the S3 DVC remote, a bare git remote and a Dask cluster.

One module per service (postgres.py, seaweedfs.py, prefect_server.py, dask_cluster.py) over
the shared process and port handling (processes.py, ports.py); team.py composes them and keeps
the stack's state (state.py) in its folder (layout.py), with the settings a machine uses
(machine.py). `python -m mnistflow.stack up --dir DIR` brings it up, `down --dir DIR` stops it.

No stage imports this package: nothing here changes what the pipeline computes.
"""
