"""Shared test plumbing: a report that tests fill with measured figures, printed after the run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPORT: list[str] = []
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # no onnxruntime usage events from the tests


@pytest.fixture
def report():
    """Call report("line") to put a measured figure into the end-of-run summary."""
    return _REPORT.append


def pytest_terminal_summary(terminalreporter):
    if _REPORT:
        terminalreporter.section("f2f measured figures")
        for line in _REPORT:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("F2F_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set F2F_RUN_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_repository(tmp_path_factory) -> Path:
    """A tiny random avatar (the real architectures, small) exported to a Triton model repository:
    guest_encoder, motion_generator, renderer (ONNX) and the avatar_step ensemble. CPU instances."""
    from export.exporter import ExportOptions, export_avatar
    from export.model_repository import BatchingConfig
    from models.avatar import random_avatar, tiny_config

    out = tmp_path_factory.mktemp("tiny_model_repository")
    options = ExportOptions(batching=BatchingConfig(instance_kind="KIND_CPU"), quiet=True)
    report = export_avatar(random_avatar(tiny_config(), seed=0), out, options, source="tiny_config seed 0")
    assert report["passed"], report
    return out


@pytest.fixture(scope="session")
def default_model_repository(tmp_path_factory) -> Path:
    """The shipped default avatar (avatars/default) exported to a model repository, as `make serve` does."""
    from export.exporter import ExportOptions, export_checkpoint
    from export.model_repository import BatchingConfig

    checkpoint = Path(__file__).resolve().parents[1] / "avatars" / "default"
    if not (checkpoint / "config.json").is_file():
        pytest.fail(f"the shipped default avatar is missing: {checkpoint}/config.json")
    out = tmp_path_factory.mktemp("default_model_repository")
    options = ExportOptions(batching=BatchingConfig(instance_kind="KIND_CPU"), quiet=True)
    assert export_checkpoint(checkpoint, out, options)["passed"]
    return out
