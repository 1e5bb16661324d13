"""Loopback ports: picked free, checked free before a service takes one, checked free after."""

from __future__ import annotations

import contextlib
import socket

from mnistflow.stack.errors import StackError

LOOPBACK = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nothing listens on now, chosen by the kernel."""
    with contextlib.ExitStack() as held:
        # All probes stay bound until every port is chosen, so the kernel never hands one twice.
        probes = [held.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind((LOOPBACK, 0))
        return [probe.getsockname()[1] for probe in probes]


def consecutive_ports(first: int, count: int) -> list[int]:
    if not 1024 <= first <= 65535 - count:
        raise StackError(f"first port {first}: expected 1024..{65535 - count} for {count} ports")
    return list(range(first, first + count))


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port (a closed server's TIME_WAIT connections don't count:
    SO_REUSEADDR, as the servers themselves bind)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def require_free(ports: dict[str, int]) -> None:
    """StackError naming every port in use, and by what it was meant for."""
    taken = [f"{port} ({name})" for name, port in ports.items() if not port_is_free(port)]
    if taken:
        raise StackError(
            f"port in use on {LOOPBACK}: {', '.join(taken)}; expected free ports: stop what "
            "holds them or choose other ports (--first-port)"
        )


def busy_ports(ports: dict[str, int]) -> dict[str, int]:
    return {name: port for name, port in ports.items() if not port_is_free(port)}
