"""The stack's state file (stack.json): its ports, the processes running, how long it took to
come up. Written after every service starts, so `down` can stop a half-started stack too."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mnistflow.core.atomic import write_text
from mnistflow.core.small_files import read_small_regular_file
from mnistflow.stack import seaweedfs
from mnistflow.stack.errors import StackError
from mnistflow.stack.layout import StackLayout
from mnistflow.stack.processes import ServiceProcess

# Every port the stack has, by what it is for.
PORT_NAMES = (
    "postgres", "prefect", "dask_scheduler", "dask_dashboard", "dask_worker", "dask_nanny",
    "dask_worker_http",
    *(f"seaweedfs_{name}" for name in seaweedfs.PORT_NAMES),
)  # fmt: skip
# A state file is about 2 KB; a larger one is none.
MAX_STATE_BYTES = 64 * 1024


class StackState(BaseModel):
    # Strict: the file lies in a folder others may write, and "4242" or true is no pid or port.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    directory: str
    # Every port the stack's servers listen on, by what it is for (all on 127.0.0.1). Kept
    # after `down`, so a restart serves the same URLs the machines were configured with.
    ports: dict[str, Annotated[int, Field(ge=1, le=65535)]]
    bucket: str
    # The running processes, in the order they started; empty once the stack is down.
    services: dict[str, ServiceProcess] = {}
    startup_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _complete_and_its_own(self) -> StackState:
        """Every port named, and every service's log in this stack's folder (a service is
        recognised by its log path: one elsewhere would be another stack's)."""
        if set(self.ports) != set(PORT_NAMES):
            raise ValueError(f"ports: expected exactly {', '.join(PORT_NAMES)}")
        logs = Path(self.directory, "logs")
        for name, service in self.services.items():
            if not _names_a_file_in(service.log, logs):
                raise ValueError(f"services.{name}.log: expected a file named in {logs}")
        return self

    def with_service(self, service: ServiceProcess) -> StackState:
        return self.model_copy(update={"services": {**self.services, service.name: service}})


def _names_a_file_in(log: str, folder: Path) -> bool:
    """Whether `log` spells a file right in `folder`: no NUL, no "." or ".." (pathlib drops
    a "." and keeps a "..", so `logs/./x` or `logs/..` would pass a plain parent check)."""
    if "\0" in log or any(part in (".", "..") for part in log.split("/")):
        return False
    return Path(log).parent == folder


def read_state(layout: StackLayout) -> StackState | None:
    """The recorded state; None where the folder holds none."""
    try:
        state = StackState.model_validate_json(
            read_small_regular_file(layout.state_file, MAX_STATE_BYTES)
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:  # pydantic's ValidationError is a ValueError
        raise StackError(f"{layout.state_file}: not a stack state file ({error})") from None
    if Path(state.directory) != layout.root:
        raise StackError(f"{layout.state_file}: directory: expected {layout.root}")
    return state


def write_state(layout: StackLayout, state: StackState) -> None:
    write_text(layout.state_file, state.model_dump_json(indent=2) + "\n")
