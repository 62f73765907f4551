"""Hostile tests in a traced project: each is recorded as an outcome and the run goes on.

The project is written per test run: an infinite loop (the tracer's own soft timeout), a sleep in C (the tracer's
watchdog thread), a regex holding the GIL (only the parent's hard kill ends it), a memory bomb, os._exit, a segfault,
a fork bomb, a fork, writes outside the work dir and a connection to a server this test listens on on the host's
loopback — plus one ordinary test that must still be traced.
"""
from __future__ import annotations

import json
import socket
import textwrap
import threading
from types import SimpleNamespace

import pytest

from trace_cli_helpers import cli, records_by_group, unit_statuses

HOSTILE = '''
import ctypes, os, re, socket, time

def helper(n):
    return n + 1

def test_ok():
    assert helper(41) == 42

def test_infinite_loop():
    n = 0
    while True:
        n = helper(n)

def test_sleeps_forever():
    time.sleep(10 ** 6)

def test_hangs_holding_the_gil():
    re.match(r"(a|aa)+$", "a" * 64 + "b")

def test_memory_bomb():
    hog = []
    while True:
        hog.append(bytearray(8 << 20))

def test_os_exit():
    os._exit(3)

def test_segfault():
    ctypes.string_at(0)

def test_fork_bomb():
    children = 0
    try:
        while children < 10000:
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            children += 1
    except OSError:
        pass
    assert children < 10000, "no process limit held"

def test_fork():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 7

def test_write_outside():
    for path in OUTSIDE:
        with open(path, "w") as f:
            f.write("escaped")

class LoneSurrogate:
    def __repr__(self):
        return "W\\ud800"

def test_lone_surrogate_repr():
    value = LoneSurrogate()
    assert value is not None

def test_network():
    try:
        socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
    except OSError:
        return
    raise AssertionError("connected to the host's network")
'''


@pytest.fixture(scope="module")
def listening_port():
    """A server on the host's loopback; a jailed child must not reach it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, target_python, listening_port):
    """The hostile project traced once; what each test below checks."""
    port, accepted = listening_port
    tmp = tmp_path_factory.mktemp("hostile")
    project = tmp / "hostile"
    (project / "tests").mkdir(parents=True)
    outside = [tmp / "outside.txt", project / "escaped.txt"]
    (project / "tests" / "test_hostile.py").write_text(
        f"OUTSIDE = {[str(p) for p in outside]!r}\nPORT = {port}\n" + textwrap.dedent(HOSTILE))
    out = tmp / "traces"
    proc = cli(project, "-o", out, "--workers", "2", "--python", target_python, "--timeout", "3",
               "--memory-mb", "400", "--max-procs", "32", "--no-function-episodes")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(line) for line in (out / "units.jsonl").read_text().splitlines()]
    return SimpleNamespace(statuses={k.split("::")[-1]: v for k, v in unit_statuses(out).items()},
                           records={k.split("::")[-1]: v for k, v in records_by_group(out).items()},
                           isolation=log[0]["isolation"], outside=outside, accepted=accepted, summary=proc.stdout)


def entry(hostile, name: str) -> dict:
    """The test's own trace: written first among its unit's records, and the only one of kind "test"."""
    (record,) = [r for r in hostile.records[name] if r["origin"]["kind"] == "test"]
    assert hostile.records[name][0] is record
    return record


def test_every_hostile_test_leaves_a_record_and_the_run_goes_on(hostile):
    assert set(hostile.statuses) == {"test_ok", "test_infinite_loop", "test_sleeps_forever", "test_memory_bomb",
                                     "test_hangs_holding_the_gil",
                                     "test_os_exit", "test_segfault", "test_fork_bomb", "test_fork",
                                     "test_write_outside", "test_network", "test_lone_surrogate_repr"}
    assert all(hostile.records[name] for name in hostile.statuses), "a unit left no record"
    assert hostile.statuses["test_ok"] == "passed"
    assert any(r["frames"] for r in hostile.records["test_ok"])
    assert "crashed" in hostile.summary and "timeout" in hostile.summary


def test_timeouts_crashes_and_memory_are_outcomes(hostile):
    # the tracer's own soft timeout (the loop's trace itself ends at the frame budget first)
    assert hostile.statuses["test_infinite_loop"] == "timeout"
    loop = entry(hostile, "test_infinite_loop")
    assert loop["outcome"] in {"frame_budget", "timeout"} and len(loop["frames"]) <= 10_000
    # stuck in C: the tracer's watchdog thread still ends it
    assert hostile.statuses["test_sleeps_forever"] == "timeout"
    assert entry(hostile, "test_sleeps_forever")["outcome"] == "timeout"
    # stuck in C holding the GIL: only the parent's hard kill ends it, and the parent writes the record
    assert hostile.statuses["test_hangs_holding_the_gil"] == "timeout"
    assert entry(hostile, "test_hangs_holding_the_gil")["outcome"] == "timeout"
    # MemoryError at the limit, or the tracer's timeout while it walks the growing list
    assert hostile.statuses["test_memory_bomb"] in {"failed", "crashed", "timeout"}
    for name in ("test_os_exit", "test_segfault"):
        assert hostile.statuses[name] == "crashed"
        assert entry(hostile, name)["outcome"] == "crashed"


def test_forks_are_contained(hostile):
    assert hostile.statuses["test_fork"] == "passed"
    assert hostile.statuses["test_fork_bomb"] == "passed"     # it asserts that a process limit stopped it


def test_a_repr_no_utf8_can_encode_is_written_escaped(hostile):
    """A user __repr__ returning a lone surrogate (no UTF-8 encodes one) is shown as its escape: the run once died
    writing that record's shard."""
    assert hostile.statuses["test_lone_surrogate_repr"] == "passed"
    shown = [f["locals"]["value"] for f in entry(hostile, "test_lone_surrogate_repr")["frames"]
             if f["locals"] and f["locals"].get("value") not in (None, "..")]
    assert shown == ["W\\ud800"]


def test_no_network(hostile):
    if "no-network" not in hostile.isolation:
        pytest.skip(f"the jail could not isolate the network here (isolation: {hostile.isolation})")
    assert hostile.statuses["test_network"] == "passed" and not hostile.accepted


def test_no_write_outside_the_work_dir(hostile):
    if not any(word in hostile.isolation for word in ("unprivileged", "read-only")):
        pytest.skip(f"the jail does not confine file writes here (isolation: {hostile.isolation}); "
                    "the child runs as root")
    assert hostile.statuses["test_write_outside"] == "failed"
    assert not any(p.exists() for p in hostile.outside)
