"""The child protocol (`python -m tracer run JOB.json`, TEAM.md) in a real child interpreter: function mode, pytest
mode, the end line, timeouts, bad job files; and tracing never changes whether a test passes."""
import json
import os
import re
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
    unit = entry["origin"].pop("unit")
    assert unit.startswith("function:") and all(r["origin"]["unit"] == unit for r in records[:-1])
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


def _project(tmp_path, tests, code=PROJECT_CODE):
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "tests").mkdir()
    (project / "pkg" / "__init__.py").write_text("")
    (project / "pkg" / "core.py").write_text(code)
    (project / "tests" / "test_things.py").write_text(tests)
    return project


QUIET = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # the same bare pytest for every run, and a faster one


class Server:
    """`python -m tracer serve` over a project's tests (no jail): `run(name, **job)` sends one unit and returns
    (reply, its records file's lines)."""

    def __init__(self, tmp_path, project, paths=("tests/test_things.py",)):
        self.tmp_path, self.project = tmp_path, project
        self.units = 0
        job = tmp_path / "serve.json"
        job.write_text(json.dumps({"mode": "pytest", "root": str(project), "paths": list(paths)}))
        env = {**os.environ, **QUIET, "PYTHONPATH": f"{project}{os.pathsep}{TRACER_PARENT}",
               "PYTHONDONTWRITEBYTECODE": "1"}
        self.log = open(tmp_path / "serve.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "tracer", "serve", str(job)], cwd=tmp_path, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def run(self, name, **job):
        self.units += 1
        unit = self.tmp_path / f"unit{self.units}"
        for sub in ("work", "home"):
            (unit / sub).mkdir(parents=True)
        job = {"depth": 2, "function_episodes": True, "max_frames": 10_000, "max_bytes": 1_000_000,
               "value_budget": 200, "soft_timeout_s": 20.0, "origin": {"repo": "r", "commit": "c"},
               "mode": "pytest", "root": str(self.project), "nodeid": f"tests/test_things.py::{name}",
               "out": str(unit / "records.jsonl"), "work": str(unit / "work"), "home": str(unit / "home"),
               "hard_timeout_s": 30.0, **job}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        out = Path(job["out"])
        return reply, [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []

    def close(self):
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0, (self.tmp_path / "serve.log").read_text()[-3000:]
        self.log.close()


def test_tracing_does_not_change_test_outcomes(tmp_path):
    """Every test of a project through one server (the way cwm-trace runs them), against pytest's own run."""
    project = _project(tmp_path, PROJECT_TESTS)
    env = {**os.environ, **QUIET, "PYTHONPATH": f"{project}{os.pathsep}{TRACER_PARENT}", "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={tmp_path}/j.xml",
                    "tests"], cwd=project, env=env, capture_output=True, timeout=120)
    untraced = _junit_statuses(tmp_path / "j.xml")
    assert sorted(set(untraced.values())) == ["error", "failed", "passed", "skipped"]

    server = Server(tmp_path, project)
    runs = {}
    for name in untraced:
        reply, lines = server.run(name)
        assert reply == {"exit": 0, "timed_out": False}
        runs[name] = lines
    server.close()
    traced = {name: lines[-1]["status"] for name, lines in runs.items()}
    records = {name: lines[:-1] for name, lines in runs.items()}
    assert traced == untraced
    entry = records["test_passes"][-1]
    assert entry["origin"] == {"repo": "r", "commit": "c", "kind": "test", "path": "tests/test_things.py",
                               "qualname": "test_passes", "input": None, "unit": "test:tests/test_things.py::test_passes"}
    # the function episodes cut from the test carry its unit: the held-out split keeps them with it
    assert {r["origin"]["unit"] for r in records["test_passes"]} == {"test:tests/test_things.py::test_passes"}
    assert "def test_passes():  # << START_OF_TRACE" in entry["context"]
    assert {f["path"] for f in entry["frames"]} == {"tests/test_things.py", "pkg/core.py"}
    episodes = [r["origin"]["qualname"] for r in records["test_passes"][:-1]]
    assert episodes == ["Stack.__init__", "Stack.push", "Stack.push", "Stack.push", "Stack.pop"]
    assert records["test_fails"][-1]["outcome"] == "raised"
    assert records["test_errors"] == [] and records["test_skipped"] == []

    # `run`, one unit in a process of its own, writes the same records
    out = tmp_path / "alone"
    out.mkdir()
    proc, lines = run_child(out, {"mode": "pytest", "root": str(project), "nodeid": "tests/test_things.py::test_passes"},
                            pythonpath=[str(project)], env=QUIET)
    assert proc.returncode == 0, proc.stderr
    assert _comparable(lines) == _comparable(runs["test_passes"])


def _comparable(lines):
    """The lines without what differs between two runs of one test: wall times and memory addresses."""
    lines = [{**line, "stats": {k: v for k, v in line["stats"].items() if k != "wall_s"}} if "stats" in line else line
             for line in lines]
    return re.sub(r"0x[0-9a-f]+", "0x?", json.dumps(lines))


ISOLATION_TESTS = textwrap.dedent("""    import os, subprocess, sys, time

    from pkg import core

    def test_leaves_things_behind():
        core.SEEN.append("changed")
        os.environ["LEFT_BEHIND"] = "1"
        open("left.txt", "w").close()
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(os.environ["PIDS"], "w") as f:
            f.write(str(child.pid))

    def test_sees_none_of_it():
        assert core.SEEN == [] and "LEFT_BEHIND" not in os.environ and not os.path.exists("left.txt")

    def test_exits():
        os._exit(3)

    def test_crashes():
        import ctypes
        ctypes.string_at(0)

    def test_hangs():
        time.sleep(60)
    """)


def test_a_server_runs_each_unit_as_if_alone_and_outlives_it(tmp_path, monkeypatch):
    """Units of one server are forks of it: what one changes (memory, environment, files in its working directory)
    the next never sees; a process it started is gone once it is answered for; one that exits, crashes or hangs
    is answered for as such, and the server runs the next."""
    project = _project(tmp_path, ISOLATION_TESTS, code="SEEN = []\n")
    pids = tmp_path / "pids"
    monkeypatch.setenv("PIDS", str(pids))
    server = Server(tmp_path, project)
    reply, lines = server.run("test_leaves_things_behind")
    assert reply == {"exit": 0, "timed_out": False} and lines[-1]["status"] == "passed"
    child = int(pids.read_text())
    with pytest.raises(ProcessLookupError):     # killed, and reaped: no zombie left either
        os.kill(child, 0)
    reply, lines = server.run("test_sees_none_of_it")
    assert lines[-1]["status"] == "passed", (tmp_path / "serve.log").read_text()[-3000:]
    reply, lines = server.run("test_exits")
    assert reply == {"exit": 3, "timed_out": False} and all("event" not in line for line in lines)
    reply, lines = server.run("test_crashes")
    assert reply["exit"] == -11 and not reply["timed_out"]
    started = time.monotonic()
    reply, lines = server.run("test_hangs", hard_timeout_s=1.0)
    assert reply == {"exit": -9, "timed_out": True} and time.monotonic() - started < 10
    reply, lines = server.run("test_sees_none_of_it")
    assert lines[-1]["status"] == "passed"
    server.close()
    assert "Segmentation fault" in (tmp_path / "serve.log").read_text()
