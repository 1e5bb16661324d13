"""Deployments load from prefect.yaml with their schedules; CLI overrides parse."""

from __future__ import annotations

import pytest
import typer

from flows.deployments import build_deployments, deployment_specs
from mnistflow.cli import parse_overrides
from tests.project_root import PROJECT_ROOT


def test_deployments_load_from_prefect_yaml_with_schedules():
    deployments = {
        d.name: d for d in build_deployments(deployment_specs(PROJECT_ROOT), PROJECT_ROOT)
    }
    assert set(deployments) == {"nightly", "inbox"}
    nightly, inbox = deployments["nightly"], deployments["inbox"]
    # The deployed flows are the request-checking wrappers, not the flows they call.
    assert nightly.flow_name == "nightly-pipeline"
    assert inbox.flow_name == "inbox-predictions"
    assert nightly.schedules[0].schedule.cron == "0 2 * * *"
    assert inbox.schedules[0].schedule.interval.total_seconds() == 900
    assert inbox.parameters == {"repredict": False}


def test_smoke_interval_replaces_every_schedule():
    for deployment in build_deployments(
        deployment_specs(PROJECT_ROOT), PROJECT_ROOT, every_seconds=20
    ):
        assert deployment.schedules[0].schedule.interval.total_seconds() == 20


def test_overrides_parse_as_yaml_scalars():
    assert parse_overrides(["train.epochs=3", "train.optimizer=sgd", "train.xla=true"]) == {
        "train.epochs": 3,
        "train.optimizer": "sgd",
        "train.xla": True,
    }
    with pytest.raises(typer.BadParameter, match="key=value"):
        parse_overrides(["train.epochs"])
