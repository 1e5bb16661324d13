"""dvc.yaml's deps are exactly each stage's import closure: an edit anywhere in the library
re-runs the stages that import it, and only those (the e2e test shows it with `dvc status`)."""

from __future__ import annotations

import copy

from tests.project_root import PROJECT_ROOT
from tests.stage_deps import dependency_gaps, pipeline_stages, stages_importing


def test_every_stage_lists_exactly_the_modules_it_imports():
    assert dependency_gaps(PROJECT_ROOT, pipeline_stages(PROJECT_ROOT)) == {}


def test_an_omitted_module_is_caught():
    stages = copy.deepcopy(pipeline_stages(PROJECT_ROOT))
    stages["train"]["deps"].remove("mnistflow/params.py")
    assert dependency_gaps(PROJECT_ROOT, stages) == {
        "train": {"missing": ["mnistflow/params.py"], "extra": []}
    }


def test_a_module_the_stage_never_imports_is_caught():
    stages = copy.deepcopy(pipeline_stages(PROJECT_ROOT))
    stages["export"]["deps"].append("mnistflow/serving")
    gaps = dependency_gaps(PROJECT_ROOT, stages)
    assert set(gaps) == {"export"} and gaps["export"]["missing"] == []
    assert "mnistflow/serving/predict.py" in gaps["export"]["extra"]


def test_the_layers_reach_the_stages_they_should():
    module = PROJECT_ROOT / "mnistflow"
    everything = {"compute", "ingest", "validate", "prepare", "train", "evaluate", "export"}
    assert stages_importing(PROJECT_ROOT, module / "params.py") == everything
    # `python -m stages.<name>` runs the package's __init__ first.
    assert stages_importing(PROJECT_ROOT, PROJECT_ROOT / "stages" / "__init__.py") == everything
    assert stages_importing(PROJECT_ROOT, module / "data" / "normalization.py") == {
        "prepare",
        "train",
        "evaluate",
        "export",
    }
    assert stages_importing(PROJECT_ROOT, module / "release" / "gates.py") == {"export"}
    assert stages_importing(PROJECT_ROOT, module / "training" / "models.py") == {"train"}
    # The kernel cap is applied by every stage that computes with TensorFlow.
    assert stages_importing(PROJECT_ROOT, module / "compute" / "cpu_kernels.py") == {
        "compute", "train", "evaluate", "export"
    }  # fmt: skip
    # Prediction code is not part of the pipeline: editing it re-runs nothing.
    for serving in sorted((module / "serving").glob("*.py")):
        assert stages_importing(PROJECT_ROOT, serving) == set(), serving


def test_the_library_is_grouped_by_concern():
    """At most ten modules directly in mnistflow/; the rest live in a package per concern."""
    module = PROJECT_ROOT / "mnistflow"
    top = sorted(path.name for path in module.glob("*.py"))
    assert len(top) <= 10, top
    packages = {path.parent.name for path in module.glob("*/__init__.py")}
    assert {"core", "data", "validation", "reference", "training", "evaluation", "release",
            "serving", "orchestration", "reporting"} <= packages  # fmt: skip


def test_the_library_never_imports_stages_or_flows():
    from tests.stage_deps import imported_names

    for path in sorted((PROJECT_ROOT / "mnistflow").rglob("*.py")):
        imported = imported_names(PROJECT_ROOT, path)
        assert not {"stages", "flows"} & imported, path
