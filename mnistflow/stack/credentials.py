"""The stack's secrets: generated once per stack, kept in its credentials/ folder (0600 files
in a 0700 folder), read back on a restart. Never committed: the stack's folder is outside
any clone, and machines only learn where the files are.

The S3 keys are written as an AWS shared-credentials file, so every AWS client (DVC's s3fs
through botocore) reads them the usual way: AWS_SHARED_CREDENTIALS_FILE plus AWS_PROFILE, or
DVC's `credentialpath` and `profile` remote settings.
"""

from __future__ import annotations

import configparser
import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from mnistflow.stack.errors import StackError

AWS_PROFILE = "mnistflow-team"


@dataclass(frozen=True)
class S3Keys:
    access_key_id: str
    secret_access_key: str


def write_private(path: Path, text: str) -> None:
    """Write `text` readable by this user only; the folder too."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def generated_s3_keys() -> S3Keys:
    # AWS's own shapes: a 20-character key id, a 40-character secret.
    return S3Keys(
        access_key_id="MF" + secrets.token_hex(9).upper(),
        secret_access_key=secrets.token_urlsafe(30)[:40],
    )


def write_aws_credentials(path: Path, keys: S3Keys, profile: str = AWS_PROFILE) -> None:
    config = configparser.ConfigParser()
    config[profile] = {
        "aws_access_key_id": keys.access_key_id,
        "aws_secret_access_key": keys.secret_access_key,
    }
    text = io.StringIO()
    config.write(text)
    write_private(path, text.getvalue())


def read_aws_credentials(path: Path, profile: str = AWS_PROFILE) -> S3Keys:
    config = configparser.ConfigParser()
    if not config.read(path) or profile not in config:
        raise StackError(f"{path}: expected an AWS credentials file with profile [{profile}]")
    section = config[profile]
    return S3Keys(section["aws_access_key_id"], section["aws_secret_access_key"])


def stack_s3_keys(path: Path) -> S3Keys:
    """The stack's S3 keys: the recorded ones, else new ones, recorded."""
    if path.is_file():
        return read_aws_credentials(path)
    keys = generated_s3_keys()
    write_aws_credentials(path, keys)
    return keys


def stack_postgres_password(path: Path) -> str:
    """The PostgreSQL password of the stack: the recorded one, else a new one, recorded."""
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    password = secrets.token_urlsafe(24)
    write_private(path, password + "\n")
    return password
