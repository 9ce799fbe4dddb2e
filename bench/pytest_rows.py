"""pytest plugin: each test's outcome saved as a JSON row when it finishes (bench/rows.py).

    ILA_SUITE_ROWS=out.json python -m pytest -p ila_fast.bench.pytest_rows tests/...

The GPU suite loads it so that a test run cut short by its time budget still says which tests
passed, failed or were skipped before the cut. Without ILA_SUITE_ROWS it does nothing.
"""
from __future__ import annotations

import os
import time

from ila_fast.bench.rows import SavedRows

_saved: SavedRows | None = None
_rows: list[dict] = []


def pytest_sessionstart(session):
    global _saved
    path = os.environ.get("ILA_SUITE_ROWS")
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
