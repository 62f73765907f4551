"""pytest plugin copied into sandboxes: writes {nodeid: {"outcome", "longrepr"}} as JSON for the collector.

Standard library + pytest only, loaded with `-p cwm_pytest_report`; the output path is $CWM_PYTEST_REPORT.
Parsing pytest's terminal output instead would break on plugins, verbosity and odd test ids.
"""
import json
import os

_results = {}
_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


def pytest_runtest_logreport(report):
    if report.when == "call":
        outcome = report.outcome
    elif report.failed:
        outcome = "error"  # setup or teardown failed
    elif report.skipped:
        outcome = "skipped"
    else:
        outcome = "passed"
    prev = _results.get(report.nodeid)
    if prev is None or _RANK[outcome] > _RANK[prev["outcome"]]:
        text = report.longreprtext if report.failed else ""
        _results[report.nodeid] = {"outcome": outcome, "longrepr": text[-4000:]}


def pytest_collectreport(report):
    if report.failed:
        _results[report.nodeid or "<collection>"] = {"outcome": "error", "longrepr": report.longreprtext[-4000:]}


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("CWM_PYTEST_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(_results, f)
