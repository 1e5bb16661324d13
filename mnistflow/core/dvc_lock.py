"""What a dvc.lock records about outputs: one reader of DVC's lock format for every caller
(records, the registry, lineage, verify)."""

from __future__ import annotations

import yaml


def lock_content(lock_text: str | None) -> dict:
    """A dvc.lock's content ({} for none). libyaml's safe loader where PyYAML has it: a
    pipeline's lock is hundreds of lines, which the pure-Python parser takes a quarter of a
    second each for (the report reads several)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(lock_text or "", Loader=loader) or {}  # noqa: S506 - a safe loader


def recorded_outputs(lock_text: str | None) -> list[tuple[str, str, str | None]]:
    """(stage, path, md5) of every output a dvc.lock records, in its order."""
    lock = lock_content(lock_text)
    return [
        (stage, out["path"], out.get("md5"))
        for stage, entry in (lock.get("stages") or {}).items()
        for out in entry.get("outs") or []
    ]


def recorded_md5(lock_text: str | None, path: str) -> str | None:
    """The md5 a dvc.lock records for the output `path`; None where it records none."""
    return next((md5 for _, out, md5 in recorded_outputs(lock_text) if out == path), None)
