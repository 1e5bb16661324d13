"""The stack's state file (stack.json): its ports, the processes running, how long it took to
come up. Written after every service starts, so `down` can stop a half-started stack too."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mnistflow.core.atomic import write_text
from mnistflow.stack.errors import StackError
from mnistflow.stack.layout import StackLayout
from mnistflow.stack.processes import ServiceProcess


class StackState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    directory: str
    # Every port the stack's servers listen on, by what it is for (all on 127.0.0.1). Kept
    # after `down`, so a restart serves the same URLs the machines were configured with.
    ports: dict[str, Annotated[int, Field(ge=1, le=65535)]]
    bucket: str
    # The running processes, in the order they started; empty once the stack is down.
    services: dict[str, ServiceProcess] = {}
    startup_seconds: float | None = None

    def with_service(self, service: ServiceProcess) -> StackState:
        return self.model_copy(update={"services": {**self.services, service.name: service}})


def read_state(layout: StackLayout) -> StackState | None:
    """The recorded state; None where the folder holds none."""
    try:
        return StackState.model_validate_json(layout.state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as error:
        raise StackError(f"{layout.state_file}: not a stack state file ({error})") from None


def write_state(layout: StackLayout, state: StackState) -> None:
    write_text(layout.state_file, state.model_dump_json(indent=2) + "\n")
