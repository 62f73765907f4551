"""The child protocol (`python -m tracer run JOB.json`, TEAM.md) in a real child interpreter: function mode, pytest
mode, the end line, timeouts, bad job files; and tracing never changes whether a test passes."""
import json
import os
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import tracer

TRACER_PARENT = str(Path(tracer.__file__).resolve().parent.parent)


def run_child(tmp_path, job, timeout=60, pythonpath=(), env=None):
    job = {"depth": 2, "function_episodes": True, "max_frames": 10_000, "max_bytes": 1_000_000,
           "value_budget": 200, "soft_timeout_s": 20.0, "origin": {"repo": "r", "commit": "c"},
           "out": str(tmp_path / "records.jsonl"), **job}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([*pythonpath, TRACER_PARENT]),
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "tracer", "run", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)
    lines = [json.loads(line) for line in Path(job["out"]).read_text().splitlines()] if proc.returncode == 0 else []
    return proc, lines


FUNCTION = textwrap.dedent("""\
    def helper(xs):
        xs.append(0)
        return len(xs)

    def f(xs, k=1):
        n = helper(xs)
        return [x * k for x in xs], n
    """)


def test_function_mode(tmp_path):
    (tmp_path / "work").mkdir()
    proc, lines = run_child(tmp_path, {"mode": "function", "root": str(tmp_path / "work"), "code": FUNCTION,
                                       "entry": "f", "input": "[1, 2], k=3"})
    assert proc.returncode == 0, proc.stderr
    *records, end = lines
    assert end == {"event": "end", "status": "returned"}
    entry = records[-1]
    assert entry["origin"] == {"repo": "r", "commit": "c", "kind": "function", "path": "<input>", "qualname": "f",
                               "input": "[1, 2], k=3"}
    assert "def f(xs, k=1):  # << START_OF_TRACE" in entry["context"]
    assert entry["frames"][0]["locals"] == {"xs": "[1, 2]", "k": "3"}
    assert entry["frames"][-1] == {"kind": "return", "depth": 0, "path": "<input>", "line": 7,
                                   "source": "    return [x * k for x in xs], n", "locals": None,
                                   "value": "([3, 6, 0], 3)"}
    assert [r["origin"]["qualname"] for r in records[:-1]] == ["helper"]   # its own function episode


@pytest.mark.parametrize("code,status", [("def f():\n    return 1 / 0\n", "raised"),
                                         ("def f(:\n", "error"),
                                         ("g = 1\n", "error")])
def test_function_mode_statuses(tmp_path, code, status):
    proc, lines = run_child(tmp_path, {"mode": "function", "root": str(tmp_path), "code": code, "input": ""})
    assert proc.returncode == 0, proc.stderr
    assert lines[-1]["event"] == "end" and lines[-1]["status"] == status
    if status == "raised":
        assert lines[0]["outcome"] == "raised" and lines[0]["frames"][-1]["kind"] == "exception"


def test_soft_timeout_ends_the_child_with_its_records(tmp_path):
    code = "def f():\n    x = 0\n    while True:\n        x += 1\n"
    started = time.monotonic()
    proc, lines = run_child(tmp_path, {"mode": "function", "root": str(tmp_path), "code": code, "input": "",
                                       "soft_timeout_s": 1.0, "max_frames": 10 ** 9, "max_bytes": 10 ** 12})
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 30
    assert lines[0]["outcome"] == "timeout" and len(lines[0]["frames"]) > 10
    assert lines[-1] == {"event": "end", "status": "timeout"}


def test_bad_job_file_is_one_clear_line(tmp_path):
    proc, _ = run_child(tmp_path, {"mode": "nonsense", "root": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "mode must be" in proc.stderr


PROJECT_TESTS = textwrap.dedent("""\
    import gc
    import weakref

    import pytest

    from pkg.core import Stack, parse


    @pytest.fixture
    def broken():
        raise RuntimeError("fixture fails")


    def test_passes():
        s = Stack()
        for i in range(3):
            s.push(i)
        assert s.pop() == 2 and list(s.items) == [0, 1]


    def test_fails():
        assert parse("1,2") == [1, 2, 3]


    def test_raises_inside():
        with pytest.raises(ValueError):
            parse("x")


    def test_errors(broken):
        pass


    @pytest.mark.skip(reason="not today")
    def test_skipped():
        pass


    @pytest.mark.xfail(reason="known")
    def test_xfails():
        assert parse("") == [0]


    def test_object_dies_when_dropped():
        s = Stack()
        ref = weakref.ref(s)
        del s
        gc.collect()
        assert ref() is None


    @pytest.mark.parametrize("text,n", [("1,2,3", 3)])
    def test_param(text, n):
        assert len(parse(text)) == n
    """)

PROJECT_CODE = textwrap.dedent("""\
    class Stack:
        def __init__(self):
            self.items = []

        def push(self, x):
            self.items.append(x)

        def pop(self):
            return self.items.pop()


    def parse(text):
        out = []
        for part in text.split(","):
            out.append(int(part))
        return out
    """)


def _junit_statuses(xml_path):
    statuses = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        status = ("failed" if "failure" in tags else "error" if "error" in tags
                  else "skipped" if "skipped" in tags else "passed")
        statuses[case.get("name")] = status
    return statuses


def test_tracing_does_not_change_test_outcomes(tmp_path):
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "tests").mkdir()
    (project / "pkg" / "__init__.py").write_text("")
    (project / "pkg" / "core.py").write_text(PROJECT_CODE)
    (project / "tests" / "test_things.py").write_text(PROJECT_TESTS)
    quiet = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # the same bare pytest for both runs, and a faster one
    env = {**os.environ, **quiet, "PYTHONPATH": f"{project}{os.pathsep}{TRACER_PARENT}", "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={tmp_path}/j.xml",
                    "tests"], cwd=project, env=env, capture_output=True, timeout=120)
    untraced = _junit_statuses(tmp_path / "j.xml")
    assert sorted(set(untraced.values())) == ["error", "failed", "passed", "skipped"]

    def traced_run(name):
        out = tmp_path / name
        out.mkdir()
        proc, lines = run_child(out, {"mode": "pytest", "root": str(project),
                                      "nodeid": f"tests/test_things.py::{name}"}, pythonpath=[str(project)], env=quiet)
        assert proc.returncode == 0, proc.stderr
        return name, lines

    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = dict(pool.map(traced_run, untraced))
    traced = {name: lines[-1]["status"] for name, lines in runs.items()}
    records = {name: lines[:-1] for name, lines in runs.items()}
    assert traced == untraced
    entry = records["test_passes"][-1]
    assert entry["origin"] == {"repo": "r", "commit": "c", "kind": "test", "path": "tests/test_things.py",
                               "qualname": "test_passes", "input": None}
    assert "def test_passes():  # << START_OF_TRACE" in entry["context"]
    assert {f["path"] for f in entry["frames"]} == {"tests/test_things.py", "pkg/core.py"}
    episodes = [r["origin"]["qualname"] for r in records["test_passes"][:-1]]
    assert episodes == ["Stack.__init__", "Stack.push", "Stack.push", "Stack.push", "Stack.pop"]
    assert records["test_fails"][-1]["outcome"] == "raised"
    assert records["test_errors"] == [] and records["test_skipped"] == []
