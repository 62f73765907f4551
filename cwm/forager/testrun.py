"""Run a repository's tests inside a sandbox and read per-test outcomes (the reward and task validation use it).

Outcomes come from a small pytest plugin (`cwm_pytest_report.py`, mounted at /opt/cwm in every sandbox), not
from pytest's terminal output.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Callable

PLUGIN_MODULE = "cwm_pytest_report"
PLUGIN_DIR = "/opt/cwm"
TEST_COMMAND = ("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=short", "-p", PLUGIN_MODULE)
_MARK = "@@CWM-PYTEST-REPORT@@"

# (command, timeout_s) -> (exit_code or None, output)
ExecFn = Callable[[str, float], tuple]


@dataclass
class TestRun:
    outcomes: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)   # nodeid -> pytest's failure text
    exit_code: int | None = None
    output: str = ""

    @property
    def passed(self) -> set[str]:
        return {k for k, v in self.outcomes.items() if v == "passed"}

    @property
    def not_passed(self) -> set[str]:
        return {k for k, v in self.outcomes.items() if v in ("failed", "error")}

    @property
    def ran(self) -> bool:
        """pytest ran to the end (tests passed or failed) and collected something without collection errors."""
        return self.exit_code in (0, 1) and bool(self.outcomes) and "<collection>" not in self.outcomes \
            and not any("::" not in k and v == "error" for k, v in self.outcomes.items())

    @property
    def summary(self) -> str:
        counts: dict[str, int] = {}
        for v in self.outcomes.values():
            counts[v] = counts.get(v, 0) + 1
        parts = [f"{n} {k}" for k, n in sorted(counts.items())] or ["no tests"]
        return ", ".join(parts) + f", pytest exit code {self.exit_code}"


def test_shell(test_ids: list[str] | None = None, *, timeout_s: float = 900.0) -> tuple[str, str]:
    """The shell line that runs the tests (all of them, or `test_ids`) and prints log tail + report; and its marker."""
    report = f"/tmp/cwm-report-{uuid.uuid4().hex[:8]}.json"
    log = report.replace(".json", ".log")
    ids = " ".join(_quote(t) for t in test_ids or [])
    cmd = (f"rm -f {report}; PYTHONPATH={PLUGIN_DIR} CWM_PYTEST_REPORT={report} PYTHONDONTWRITEBYTECODE=1 "
           f"timeout -s KILL {int(timeout_s)} {' '.join(TEST_COMMAND)} {ids} > {log} 2>&1; code=$?; "
           f"tail -c 20000 {log}; printf '\\n{_MARK} %s\\n' $code; cat {report} 2>/dev/null; rm -f {report} {log}")
    return cmd, _MARK


def parse_output(text: str) -> TestRun:
    head, sep, tail = text.rpartition(_MARK)
    if not sep:
        return TestRun(output=text)
    first, _, rest = tail.strip().partition("\n")
    run = TestRun(output=head, exit_code=int(first) if first.strip().lstrip("-").isdigit() else None)
    try:
        report = json.loads(rest) if rest.strip() else {}
    except json.JSONDecodeError:
        report = {}
    run.outcomes = {k: v["outcome"] for k, v in report.items()}
    run.failures = {k: v["longrepr"] for k, v in report.items() if v["longrepr"]}
    return run


def run_tests_exec(exec_fn: ExecFn, *, timeout_s: float = 900.0, test_ids: list[str] | None = None) -> TestRun:
    """Run the tests through `exec_fn` (a sandbox's shell) and parse the plugin's report."""
    cmd, _ = test_shell(test_ids, timeout_s=timeout_s)
    _, output = exec_fn(cmd, timeout_s + 30)
    return parse_output(output)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"
