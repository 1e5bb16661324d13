"""PostgreSQL for the Prefect server: Debian's server binaries, one cluster in the stack's
folder, TCP on 127.0.0.1 only.

PostgreSQL refuses to run as root, so a root user runs it as the `postgres` account Debian's
package creates; that account then owns the cluster's folder and must be able to reach it
(checked, with a clear error, rather than changing folders outside the stack). No Unix socket:
its default folder, /var/run/postgresql, lies outside the stack.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mnistflow.stack.errors import StackError
from mnistflow.stack.layout import StackLayout
from mnistflow.stack.ports import LOOPBACK
from mnistflow.stack.processes import ServiceProcess, start_process

DEBIAN_SERVERS = Path("/usr/lib/postgresql")
SERVER_ACCOUNT = "postgres"
# initdb's superuser, which Prefect logs in as, and Prefect's database.
LOGIN = "prefect"
DATABASE = "prefect"
CONNECT_TIMEOUT_SECONDS = 2.0


def server_binaries() -> Path:
    """The folder holding initdb and postgres: Debian's newest, else the one on PATH."""
    versions = sorted(
        DEBIAN_SERVERS.glob("*/bin"),
        key=lambda folder: [int(part) for part in re.findall(r"\d+", folder.parent.name)],
        reverse=True,
    )
    on_path = shutil.which("initdb")
    candidates = [*versions, *([Path(on_path).resolve().parent] if on_path else [])]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise StackError(
        f"PostgreSQL's server (initdb, postgres) not found in {DEBIAN_SERVERS}/*/bin or on "
        "PATH; expected Debian's postgresql package (apt-get install postgresql; `make test` "
        "installs it)"
    )


def server_account() -> str | None:
    """The account the server runs as: `postgres` for root, else this user (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        raise StackError(
            f"running as root, PostgreSQL needs the `{SERVER_ACCOUNT}` account, which Debian's "
            "postgresql package creates; not found"
        ) from None
    return SERVER_ACCOUNT


def _can_enter(folder: Path, account: pwd.struct_passwd) -> bool:
    status = folder.stat()
    if status.st_uid == account.pw_uid:
        return bool(status.st_mode & stat.S_IXUSR)
    if status.st_gid == account.pw_gid:
        return bool(status.st_mode & stat.S_IXGRP)
    return bool(status.st_mode & stat.S_IXOTH)


def require_reachable(folder: Path, account: str) -> None:
    """StackError naming the first folder above `folder` that `account` cannot enter."""
    entry = pwd.getpwnam(account)
    for ancestor in reversed(folder.parents):
        if not _can_enter(ancestor, entry):
            mode = stat.filemode(ancestor.stat().st_mode)
            raise StackError(
                f"PostgreSQL runs as `{account}`, which cannot enter {ancestor} ({mode}) on the "
                f"way to {folder}; expected a stack folder every account can reach (e.g. one "
                "under /tmp or /srv)"
            )


def prepare_folder(folder: Path, account: str | None) -> None:
    """The server's folder, owned by its account, private to it."""
    folder.mkdir(parents=True, exist_ok=True)
    if account:
        # The stack's own folder must let the account through; its parents are only checked.
        folder.parent.chmod(folder.parent.stat().st_mode | stat.S_IXOTH)
        require_reachable(folder, account)
        entry = pwd.getpwnam(account)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    folder.chmod(0o700)


def _as_account(account: str | None) -> dict[str, Any]:
    return {"user": account, "group": account, "extra_groups": []} if account else {}


def initialise_cluster(layout: StackLayout, password: str, account: str | None) -> bool:
    """initdb the cluster unless it exists; True when it was created now."""
    data = layout.postgres / "data"
    if (data / "PG_VERSION").is_file():
        return False
    prepare_folder(layout.postgres, account)
    # initdb reads the password from a file the server's account can open; it lives only for
    # the call.
    password_file = layout.postgres / "initdb-password"
    descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(password + "\n")
        if account:
            entry = pwd.getpwnam(account)
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(
            [str(server_binaries() / "initdb"), "--pgdata", str(data), "--username", LOGIN,
             "--auth", "scram-sha-256", "--pwfile", str(password_file), "--encoding", "UTF8",
             "--locale", "C.UTF-8"],
            cwd=layout.postgres,
            env=_server_environment(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **_as_account(account),
        )  # fmt: skip
    finally:
        password_file.unlink(missing_ok=True)
    if result.returncode != 0:
        raise StackError(f"initdb of {data} failed:\n{result.stderr.strip()[-2000:]}")
    return True


def _server_environment() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}


def start_postgres(layout: StackLayout, port: int, account: str | None) -> ServiceProcess:
    command = [
        str(server_binaries() / "postgres"),
        "-D", str(layout.postgres / "data"),
        "-c", f"listen_addresses={LOOPBACK}",
        "-c", f"port={port}",
        "-c", "unix_socket_directories=",
    ]  # fmt: skip
    return start_process(
        "postgres",
        command,
        layout.log("postgres"),
        _server_environment(),
        layout.postgres,
        user=account,
        # SIGTERM is PostgreSQL's "smart" shutdown: it waits for every client (the Prefect
        # server's pool) to leave. SIGINT is its fast shutdown: clients cut, a checkpoint.
        stop_signal="SIGINT",
        grace_seconds=30.0,
    )


def connection_url(port: int, password: str, database: str = DATABASE, driver: str = "") -> str:
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return f"{scheme}://{LOGIN}:{quote(password, safe='')}@{LOOPBACK}:{port}/{database}"


async def _fetch(url: str, sql: str, arguments: tuple) -> list[tuple]:
    import asyncpg

    connection = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        return [tuple(row) for row in await connection.fetch(sql, *arguments)]
    finally:
        await connection.close()


def query(url: str, sql: str, *arguments: Any) -> list[tuple]:
    """Rows of one SQL statement, on a connection of its own."""
    return asyncio.run(_fetch(url, sql, arguments))


def answers(port: int, password: str) -> bool:
    import asyncpg

    try:
        return query(connection_url(port, password, "postgres"), "SELECT 1") == [(1,)]
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        # Not listening yet, or listening but still starting ("the database system is
        # starting up"); a wrong password shows in the server's log when the wait gives up.
        return False


def ensure_database(port: int, password: str, name: str = DATABASE) -> None:
    url = connection_url(port, password, "postgres")
    if not query(url, "SELECT 1 FROM pg_database WHERE datname = $1", name):
        # A statement that takes no parameters; the name is this module's constant.
        query(url, f'CREATE DATABASE "{name}"')
