"""What a machine needs to use the stack, written into its folder as team.json and team.env,
and applied to a clone.

No secret is in either file, only where the keys are: the AWS shared-credentials file (read
by DVC's S3 client through botocore, the usual AWS way). A clone keeps the remote's settings
in DVC's local config (.dvc/config.local, git-ignored) and the publishing decision in its own
.git/config: nothing of the stack is ever committed.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from mnistflow.core.atomic import write_text
from mnistflow.core.dvc_cli import checked_dvc
from mnistflow.core.git import git
from mnistflow.release.publishing import SETTING as PUBLISH_SETTING
from mnistflow.stack.errors import StackError

DVC_REMOTE = "team"
# The folder inside the bucket DVC keeps its cache in.
DVC_PREFIX = "dvc"


class MachineSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prefect_api_url: str
    dask_address: str
    dvc_remote_url: str
    dvc_endpoint_url: str
    aws_shared_credentials_file: str
    aws_profile: str
    git_remote: str

    def environment(self) -> dict[str, str]:
        """The variables a machine's shell, workers and flow runs take from team.env."""
        return {
            "PREFECT_API_URL": self.prefect_api_url,
            # The inbox flow's cluster, and the operator's list of clusters it may use.
            "MNISTFLOW_DASK_ADDRESS": self.dask_address,
            "MNISTFLOW_DASK_ADDRESSES": self.dask_address,
            "AWS_SHARED_CREDENTIALS_FILE": self.aws_shared_credentials_file,
            "AWS_PROFILE": self.aws_profile,
        }


def write_machine_files(json_file: Path, env_file: Path, settings: MachineSettings) -> None:
    write_text(json_file, settings.model_dump_json(indent=2) + "\n")
    lines = [
        "# The team stack's settings for a machine: `set -a; . THIS_FILE; set +a`.",
        "# No secrets here; the S3 keys are in AWS_SHARED_CREDENTIALS_FILE.",
        *(f"{key}={shlex.quote(value)}" for key, value in settings.environment().items()),
        "# DVC remote (applied to a clone's .dvc/config.local by `python -m mnistflow.stack"
        " join`):",
        f"MNISTFLOW_DVC_REMOTE_URL={shlex.quote(settings.dvc_remote_url)}",
        f"MNISTFLOW_DVC_ENDPOINT_URL={shlex.quote(settings.dvc_endpoint_url)}",
        f"MNISTFLOW_GIT_REMOTE={shlex.quote(settings.git_remote)}",
    ]
    write_text(env_file, "\n".join(lines) + "\n")


def read_machine_settings(json_file: Path) -> MachineSettings:
    try:
        return MachineSettings.model_validate_json(json_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StackError(f"{json_file}: missing; expected a stack's team.json (run `up`)") from None
    except ValidationError as error:
        raise StackError(f"{json_file}: not a stack's team.json ({error})") from None


def configure_dvc_remote(clone: Path, settings: MachineSettings, remote: str = DVC_REMOTE) -> None:
    """The stack's bucket as the clone's default DVC remote, in its local config only."""
    checked_dvc(clone, "remote", "add", "--local", "--default", "--force", remote,
                settings.dvc_remote_url)  # fmt: skip
    for option, value in (
        ("endpointurl", settings.dvc_endpoint_url),
        ("credentialpath", settings.aws_shared_credentials_file),
        ("profile", settings.aws_profile),
    ):
        checked_dvc(clone, "remote", "modify", "--local", remote, option, value)


def configure_publishing(clone: Path, publishes: bool) -> None:
    """This clone's own decision to publish (mnistflow.release.publishing), in .git/config."""
    git(clone, "config", "--local", PUBLISH_SETTING, "true" if publishes else "false")
