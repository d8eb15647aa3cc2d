"""Hypothesis settings for the reliability tests: no example database on disk (nothing under the
checkout), no per-example deadline (2 shared cores), and the same examples on every CI run
(`CI=true`: a failure there is reproducible; locally each run explores new inputs)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("f2f", database=None, deadline=None, derandomize=os.environ.get("CI") == "true",
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("f2f")
