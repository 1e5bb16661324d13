"""One history for two machines: a publishing clone and an experimenting one, for real.

One bare git repository and one DVC remote (a folder) stand for the team's. "Machine A" and
"machine B" are two clones of it, each running the real `mnistflow` CLI in its own processes
with its own Prefect home (the clone's .prefect/). A is set to publish (git config
mnistflow.publish true); B is not:

- A's run records, registers v0.0.1 and pushes the record, the tag and the data;
- B verifies A's registered version (`mnistflow verify`: every output identical) and restores
  A's record byte for byte through the remotes;
- B's own run records locally and publishes nothing: the remotes are untouched;
- B's experiment, published on purpose (--publish), shows in A's `dvc exp show` after a fetch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnistflow.release.registry import ARTIFACT
from tests.test_pipeline_end_to_end import copy_project, dvc, environment, run, set_params
from tests.test_records_end_to_end import digests

MNISTFLOW = str(Path(sys.executable).parent / "mnistflow")


def mnistflow(clone: Path, *arguments: str, expect: int = 0) -> str:
    """The real CLI in its own process, with the clone's own Prefect home (no shared server)."""
    env = {k: v for k, v in environment().items() if not k.startswith("PREFECT_API")}
    env.pop("MNISTFLOW_ROOT", None)
    env["MNISTFLOW_PREFECT_HOME"] = str(clone / ".prefect")
    result = subprocess.run(
        [MNISTFLOW, *arguments], cwd=clone, env=env, capture_output=True, text=True,
        timeout=1200, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == expect, f"mnistflow {' '.join(arguments)}:\n{output[-4000:]}"
    return output


def remote_state(team: dict) -> tuple[str, list[str]]:
    """Every ref of the team's git remote, and every file of its DVC remote."""
    refs = run(["git", "ls-remote", str(team["git"])], team["base"])
    files = sorted(
        str(path.relative_to(team["dvc"])) for path in team["dvc"].rglob("*") if path.is_file()
    )
    return refs, files


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("team")
    seed = copy_project(base / "seed")
    run(["git", "init", "-q", "--bare", "-b", "main", str(base / "team.git")], base)
    (base / "dvc-store").mkdir()
    dvc("remote", "add", "-d", "team", str(base / "dvc-store"), cwd=seed)
    run(["git", "add", "-A"], seed)
    run(["git", "commit", "-q", "-m", "the team's remotes"], seed)
    run(["git", "push", "-q", str(base / "team.git"), "main"], seed)
    machines = {}
    for name in ("machine-a", "machine-b"):
        machines[name] = base / name
        run(["git", "clone", "-q", str(base / "team.git"), str(machines[name])], base)
    run(["git", "config", "mnistflow.publish", "true"], machines["machine-a"])
    return {"base": base, "git": base / "team.git", "dvc": base / "dvc-store", **machines}


def test_a_publishes_b_verifies_restores_and_publishes_only_on_purpose(team):
    a, b = team["machine-a"], team["machine-b"]
    before = remote_state(team)
    output = mnistflow(a, "run")
    assert f"registered {ARTIFACT} v0.0.1" in output or "v0.0.1" in output, output[-2000:]
    refs, files = remote_state(team)
    assert refs != before[0] and f"refs/tags/{ARTIFACT}@v0.0.1" in refs and "refs/exps/" in refs
    assert files != before[1]
    recorded = digests(a)

    # B: verify A's registered version on this machine, from B's clone.
    run(["git", "fetch", "-q", "--tags", "origin"], b)
    verified = mnistflow(b, "verify", f"{ARTIFACT}@v0.0.1")
    assert "DIFFERS" not in verified and "outputs identical" in verified, verified[-3000:]
    assert "models/model.onnx" in verified and "compute: the same on both sides" in verified
    # ... and restore A's record byte for byte through the remotes.
    record = next(
        line.split()[-1].rsplit("/", 1)[-1] for line in refs.splitlines() if "refs/exps/" in line
    )
    dvc("exp", "pull", "origin", record, cwd=b)
    dvc("exp", "apply", record, cwd=b)
    dvc("pull", cwd=b)
    assert digests(b) == recorded
    run(["git", "checkout", "-q", "--", "."], b)
    run(["git", "clean", "-qfd", "--", "reports"], b)

    # B's own run records locally and publishes nothing.
    published = remote_state(team)
    set_params(b, {"evaluate": {"batch_size": 256}})
    own = mnistflow(b, "run")
    assert "not published" in own, own[-2000:]
    assert "refs/exps/" in run(["git", "for-each-ref", "refs/exps"], b)
    assert remote_state(team) == published
    assert not run(["git", "tag", "--list", f"{ARTIFACT}@v0.1.0"], b).strip()

    # B publishes one experiment on purpose; A sees it after a fetch.
    mnistflow(b, "run", "--set", "train.seed=7", "--name", "b-seed-7", "--publish")
    assert "b-seed-7" in remote_state(team)[0]
    dvc("exp", "pull", "origin", "b-seed-7", cwd=a)
    shown = json.loads(dvc("exp", "show", "--json", cwd=a))
    names = {
        experiment.get("name")
        for baseline in shown
        for experiment in (baseline.get("experiments") or [])
    }
    assert "b-seed-7" in names
    assert os.path.isdir(a / ".prefect") and os.path.isdir(b / ".prefect")
