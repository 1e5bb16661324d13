"""Where everything of one stack lives: one folder, nothing outside it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StackLayout:
    """The paths of a stack in `root`; creating them is the services' business."""

    root: Path

    @classmethod
    def of(cls, directory: Path | str) -> StackLayout:
        return cls(Path(directory).expanduser().resolve())

    @property
    def state_file(self) -> Path:
        """pids, ports, URLs and credential paths of the running stack."""
        return self.root / "stack.json"

    @property
    def machine_env_file(self) -> Path:
        """What a machine sources to use the stack (no secrets in it, only where they are)."""
        return self.root / "team.env"

    @property
    def machine_json_file(self) -> Path:
        return self.root / "team.json"

    @property
    def credentials(self) -> Path:
        return self.root / "credentials"

    @property
    def aws_credentials_file(self) -> Path:
        return self.credentials / "aws-credentials"

    @property
    def postgres_password_file(self) -> Path:
        return self.credentials / "postgres-password"

    @property
    def seaweedfs_identities_file(self) -> Path:
        return self.credentials / "seaweedfs-identities.json"

    @property
    def postgres(self) -> Path:
        return self.root / "postgres"

    @property
    def seaweedfs(self) -> Path:
        return self.root / "seaweedfs"

    @property
    def prefect_home(self) -> Path:
        """The Prefect server's own home (its settings and logs; its state is in PostgreSQL)."""
        return self.root / "prefect"

    @property
    def dask(self) -> Path:
        return self.root / "dask"

    @property
    def git_remote(self) -> Path:
        """The team's bare git repository."""
        return self.root / "git" / "mnistflow.git"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, service: str) -> Path:
        return self.logs / f"{service}.log"
