"""`cwm-trace` throughput, units per second, on a real package's own tests (toolz's, the pinned sdist; the example
shop project where the package registry cannot be reached), one worker:

- server: how `cwm-trace` runs units (cwm/tracing/child.py `ServerPool`): one jailed `python -m tracer serve` that
  starts the interpreter, imports pytest and collects the tests once, then runs each unit in a fork of itself;
- baseline, a fresh server per unit: every unit pays for a jail, an interpreter, pytest's import and the
  collection of its test file, as every unit did before the server.

Both run the same units in the same run; their statuses and trace counts must agree before any time counts.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from cwm.pypi import TOOLZ, RegistryUnreachable, fetch_sdist
from cwm.tracing.child import ServerPool, TraceOptions, UnitServer, stage_tracer
from cwm.tracing.run import scratch_dir
from cwm.tracing.target import probe_python
from cwm.tracing.units import discover_tests

UNITS = 16
ORIGIN = {"repo": "bench", "commit": None}
SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop"


@pytest.fixture(scope="module")
def project():
    """(root, target interpreter, the first UNITS tests of one test file)."""
    try:
        root, pick = fetch_sdist(*TOOLZ), "toolz/tests/test_itertoolz.py::"
    except RegistryUnreachable as e:
        print(f"toolz left out ({e}); the example shop project instead")
        root, pick = SHOP, ""
    target = probe_python(None)
    units, _ = discover_tests(target, root)
    return root, target, [u for u in units if u.group.startswith(pick)][:UNITS]


def _pooled(units, **server_args):
    pool = ServerPool(**server_args)
    try:
        return [pool.run(unit, ORIGIN) for unit in units]
    finally:
        pool.close()


def _fresh_server_each(units, **server_args):
    results = []
    for unit in units:
        server = UnitServer(**{**server_args, "paths": (unit.job["nodeid"].split("::", 1)[0],)})
        try:
            results.append(server.run(unit, ORIGIN))
        finally:
            server.close()
    return results


def test_unit_server_throughput(project):
    root, target, units = project
    with scratch_dir() as scratch:
        args = dict(mode="pytest", target=target, tracer_path=stage_tracer(scratch), root=root,
                    options=TraceOptions(), scratch=scratch,
                    paths=tuple(dict.fromkeys(u.job["nodeid"].split("::", 1)[0] for u in units)))
        t0 = time.perf_counter()
        served = _pooled(units, **args)
        t1 = time.perf_counter()
        fresh = _fresh_server_each(units, **args)
        t2 = time.perf_counter()
    assert [r.status for r in served] == [r.status for r in fresh]
    assert [len(r.records) for r in served] == [len(r.records) for r in fresh]
    assert all(r.records for r in served)
    server_s, fresh_s = t1 - t0, t2 - t1
    print(f"\n{len(units)} tests of {root.name}, Python {target.version}, one worker, {served[0].isolation}")
    print("| runner | wall s | units/s |\n| --- | --- | --- |")
    print(f"| server (fork per unit) | {server_s:.2f} | {len(units) / server_s:.1f} |")
    print(f"| fresh server per unit | {fresh_s:.2f} | {len(units) / fresh_s:.1f} |")
    print(f"server ÷ fresh, units/s: {fresh_s / server_s:.2f}×")
    assert fresh_s / server_s > 2.0
