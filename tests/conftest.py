"""Shared test plumbing: a report that tests fill with measured figures, printed after the run."""

from __future__ import annotations

import os

import pytest

_REPORT: list[str] = []


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
