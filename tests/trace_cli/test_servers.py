"""The unit servers of a run (cwm/tracing/child.py): one serves many units; one that dies mid-unit leaves that unit
recorded as crashed, with its entry's record, and the pool starts a fresh one for the next."""
from __future__ import annotations

import os
import signal
import threading
import time
import textwrap

from cwm.tracing.child import ServerPool, TraceOptions, stage_tracer
from cwm.tracing.run import scratch_dir
from cwm.tracing.target import probe_python
from cwm.tracing.units import Unit

TESTS = textwrap.dedent("""\
    import os, time

    def test_quick():
        assert os.getpid() != 1

    def test_slow():
        time.sleep(3)
    """)
ORIGIN = {"repo": "r", "commit": None}


def _unit(name):
    nodeid = f"tests/test_x.py::{name}"
    return Unit(group=nodeid, job={"mode": "pytest", "nodeid": nodeid},
                origin={"kind": "test", "path": "tests/test_x.py", "qualname": name, "input": None})


def test_a_server_that_dies_mid_unit_is_replaced(tmp_path, target_python):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(TESTS)
    target = probe_python(target_python)
    with scratch_dir() as scratch:
        pool = ServerPool(mode="pytest", target=target, tracer_path=stage_tracer(scratch), root=tmp_path,
                          options=TraceOptions(timeout_s=20), scratch=scratch, paths=("tests/test_x.py",))
        try:
            first = [pool.run(_unit("test_quick"), ORIGIN) for _ in range(3)]
            assert [r.status for r in first] == ["passed"] * 3
            assert len(pool.servers) == 1       # one server ran all three
            (server,) = pool.servers

            def kill_server():
                time.sleep(1.0)
                os.killpg(server.proc.pid, signal.SIGKILL)
            killer = threading.Thread(target=kill_server)
            killer.start()
            started = time.monotonic()
            died = pool.run(_unit("test_slow"), ORIGIN)
            killer.join()
            assert time.monotonic() - started < 3, "the parent waited for the dead server's unit"
            assert died.status == "crashed" and "server" in died.detail
            assert [r["outcome"] for r in died.records] == ["crashed"]
            assert not server.alive
            after = pool.run(_unit("test_quick"), ORIGIN)
            assert after.status == "passed" and after.records
            assert len(pool.servers) == 2
        finally:
            pool.close()
        assert not any(scratch.glob("server-*")), "a closed server left its files"
