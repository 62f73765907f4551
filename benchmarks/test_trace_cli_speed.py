"""`cwm-trace` throughput, units per second, on a real package's own tests (toolz's, the pinned sdist; the example
shop project where the package registry cannot be reached), one worker:

- server: how `cwm-trace` runs units (cwm/tracing/child.py `ServerPool`): one jailed `python -m tracer serve` that
  starts the interpreter, imports pytest and collects the tests once, then runs each unit in a fork of itself;
- baseline, a fresh server per unit: every unit pays for a jail, an interpreter, pytest's import and the
  collection of its test file, as every unit did before the server.

Both run the same units in the same run; their statuses and trace counts must agree before any time counts. The
units: 16 of toolz's tests, and 16 trivial ones (what a unit costs when its test costs nothing).

`test_parent_record_io`: what the parent does with every record (read from the child's file, written to a shard),
orjson (cwm/tracing/child.py, cwm/data/shards.py) against the standard library's json, on the records of a real
run, the decoded records checked equal first.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest

from cwm.data.shards import encode_sample, iter_records
from cwm.pypi import TOOLZ, RegistryUnreachable, fetch_sdist
from cwm.tracing.child import ServerPool, TraceOptions, UnitServer, read_child_output, stage_tracer
from cwm.tracing.run import scratch_dir, trace_units
from cwm.tracing.target import probe_python
from cwm.tracing.units import discover_tests

UNITS = 16
ORIGIN = {"repo": "bench", "commit": None}
SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop"


TRIVIAL = "def add(a, b):\n    return a + b\n\n" + "".join(
    f"def test_{i}():\n    assert add({i}, 1) == {i + 1}\n\n" for i in range(UNITS))


@pytest.fixture(scope="module", params=["toolz", "trivial"])
def project(request, tmp_path_factory):
    """(root, target interpreter, the first UNITS tests of one test file)."""
    if request.param == "trivial":
        root, pick = tmp_path_factory.mktemp("trivial"), ""
        (root / "tests").mkdir()
        (root / "tests" / "test_trivial.py").write_text(TRIVIAL)
    else:
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
    print(f"server ÷ fresh, units/s: {fresh_s / server_s:.2f}×; a unit through the server, median "
          f"{statistics.median(r.wall_s for r in served[1:]) * 1e3:.1f} ms (the first starts the server)")
    assert fresh_s / server_s > 2.0


def test_parent_record_io(tmp_path):
    """The records of toolz's itertoolz tests (or the shop's), written as a child writes them, read and encoded by
    the parent's code (orjson) and by the standard library's json (the baseline), best of 3 CPU seconds each."""
    try:
        root, tests = fetch_sdist(*TOOLZ), ["toolz/tests/test_itertoolz.py::*"]
    except RegistryUnreachable as e:
        print(f"toolz left out ({e}); the example shop project instead")
        root, tests = SHOP, []
    target = probe_python(None)
    units, _ = discover_tests(target, root)
    units = [u for u in units if not tests or u.group.startswith(tests[0][:-1])]
    trace_units(units, out_dir=tmp_path / "shards", target=target, root=root, options=TraceOptions(), workers=2,
                origin=ORIGIN)
    child_output = tmp_path / "records.jsonl"
    with open(child_output, "w") as f:
        for record in iter_records(tmp_path / "shards"):
            f.write(json.dumps(record) + "\n")       # as tracer/runner.py writes them
    size = child_output.stat().st_size

    def parent():
        records, _, _ = read_child_output(child_output)
        return records, [encode_sample(r) for r in records]

    def stdlib():
        with open(child_output, encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        return records, [json.dumps(r, ensure_ascii=False).encode() for r in records]

    assert parent()[0] == stdlib()[0]
    assert [json.loads(b) for b in parent()[1]] == stdlib()[0]
    best = {}
    for name, fn in (("orjson", parent), ("json", stdlib)) * 3:
        t0 = time.process_time()
        fn()
        best[name] = min(best.get(name, float("inf")), time.process_time() - t0)
    print(f"\nparent's read + encode of {size / 1e6:.1f} MB of records: orjson {best['orjson']:.3f} s, "
          f"json {best['json']:.3f} s, json ÷ orjson {best['json'] / best['orjson']:.2f}×")
    assert best["json"] / best["orjson"] > 1.2
