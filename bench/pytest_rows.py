"""pytest plugin: each test's outcome saved as a JSON row when it finishes (bench/rows.py).

    python -m pytest -p ila_fast.bench.pytest_rows --suite-rows out.json tests/...

The GPU suite loads it so that a test run cut short by its time budget still says which tests
passed, failed or were skipped before the cut. Without --suite-rows it does nothing.
"""
from __future__ import annotations

import time

from ila_fast.bench.rows import SavedRows

_saved: SavedRows | None = None
_rows: list[dict] = []


def pytest_addoption(parser):
    parser.addoption("--suite-rows", default=None, metavar="JSON",
                     help="save each test's outcome here as it finishes (the GPU suite's rows)")


def pytest_sessionstart(session):
    global _saved
    path = session.config.getoption("suite_rows")
    if path:
        _saved = SavedRows(path, args=list(session.config.args), rows=_rows, started=time.time())
        _saved.write()


def pytest_runtest_logreport(report):
    # One row per test: its call outcome, or the setup's when setup failed or skipped.
    if _saved is None or not (report.when == "call" or (report.when == "setup" and report.outcome != "passed")):
        return
    row = {"test": report.nodeid, "outcome": report.outcome, "seconds": round(report.duration, 3)}
    if report.outcome == "failed":
        row["message"] = str(report.longrepr)[-1500:]
    elif report.outcome == "skipped" and isinstance(report.longrepr, tuple):
        row["message"] = str(report.longrepr[2])[:300]
    _rows.append(row)
    _saved.write()


def pytest_sessionfinish(session, exitstatus):
    if _saved is not None:
        counts = {k: sum(r["outcome"] == k for r in _rows) for k in ("passed", "failed", "skipped")}
        _saved.finish(exitstatus=int(exitstatus), counts=counts)
