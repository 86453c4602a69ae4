"""Hypothesis profiles for the fuzzers, and the summary `make fuzz` prints.

`HYPOTHESIS_PROFILE` picks the profile: `test` (the default, what `make test` runs: a
modest budget, derandomized so a run is reproducible and CI never flakes) or `fuzz`
(what `make fuzz` runs: many more random examples, failures saved in `.hypothesis/`
and replayed first next time). Each fuzzer scales its own budget with `budget()`.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.statistics import collector

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "test")
_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
settings.register_profile("test", max_examples=100, derandomize=True, **_COMMON)
settings.register_profile("fuzz", max_examples=2_000, **_COMMON)
settings.load_profile(PROFILE)

EXAMPLES: Counter[str] = Counter()
"""Examples run per fuzz test (test node id), passing and failing, across every phase."""


def budget(share: float) -> int:
    """This fuzzer's example count: `share` of the profile's `max_examples`, at least 10."""
    return max(10, int(settings.default.max_examples * share))


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call(item):
    """Count the examples each test runs (innermost, so Hypothesis reports to us)."""

    def note(stats):
        for phase in stats.values():
            if isinstance(phase, dict):
                EXAMPLES[item.nodeid] += sum(
                    case["status"] in ("valid", "interesting") for case in phase["test-cases"]
                )

    with collector.with_value(note):
        yield


def pytest_terminal_summary(terminalreporter):
    failed = {
        report.nodeid
        for report in terminalreporter.stats.get("failed", [])
        if report.nodeid.startswith("tests/fuzz/")
    }
    if not EXAMPLES and not failed:
        return
    write = terminalreporter.write_line
    terminalreporter.section(f"fuzz summary (profile {PROFILE})")
    for nodeid in sorted(set(EXAMPLES) | failed):
        outcome = "FAILED" if nodeid in failed else "ok"
        write(f"{EXAMPLES[nodeid]:>8} examples  {outcome:<6}  {nodeid}")
    total = sum(EXAMPLES.values())
    write(f"{total:>8} examples in {len(set(EXAMPLES) | failed)} fuzz tests, {len(failed)} failed")
