"""pytest plugin for the untraced oracle run: writes {nodeid: passed|failed|skipped|error} to $CWM_OUTCOMES."""
import json
import os

_outcomes = {}


def pytest_runtest_logreport(report):
    if report.when == "call":
        _outcomes[report.nodeid] = "skipped" if report.skipped else report.outcome
    elif report.failed:                      # setup or teardown raised
        _outcomes[report.nodeid] = "error"
    elif report.skipped:                     # skip marker / skip() in a fixture
        _outcomes.setdefault(report.nodeid, "skipped")


def pytest_sessionfinish(session):
    with open(os.environ["CWM_OUTCOMES"], "w") as f:
        json.dump(_outcomes, f)
