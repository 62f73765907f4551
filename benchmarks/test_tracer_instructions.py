"""Tracer speed in instructions: the workloads of test_tracer_speed.py, counted by valgrind instead of timed.

Timings on the shared 2-core machine drift by up to 1.6x between runs, and even best-of-5 ratios move by ±30%;
instruction counts hardly do (two full runs agreed within 0.5%). Each count is callgrind's total for a child process
that sets a workload up, traces it once to warm the caches every session shares (imports, bytecode facts), then
traces it N more times; per recorder, the count at N=1 minus the count at N=0 is what one traced run costs, session
set-up included (the first run of a process costs more: bytecode facts, linecache).

Recorders: fast (tracer/recorder.py), naive (tracer/naive.py), and two from test_tracer_speed.py: frames-only
(every frame, no locals) and replay (fast's own snapshots, recorded in the warm-up run, played back: every frame with
its real locals and no snapshot work). naive ÷ replay is the ceiling of naive ÷ fast: what a change detector whose
snapshots cost nothing would reach, with the same output to build and write. Instructions are not time (a
cache miss or a system call costs more than an add), so these ratios back the timed ones up; they do not replace
them.

Needs valgrind and CWM_BENCH_INSTRUCTIONS=1 (skipped, saying why, otherwise): about 27 minutes for the workloads on
both interpreters and as long again for the package one, 8 for the functions one by one, on two cores.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import test_tracer_speed as speed  # noqa: E402

RECORDERS = ("fast", "naive", "frames-only", "replay")


def _count(python, *args):
    """callgrind's instruction total for one child run."""
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", python, speed.__file__, "--trace",
         *map(str, args)],
        capture_output=True, text=True, timeout=1800,
        env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(HERE.parent)})
    found = re.search(r"Collected : (\d+)", proc.stderr)
    assert proc.returncode == 0 and found, f"valgrind run {args} failed:\n{proc.stderr[-2000:]}"
    return int(found.group(1))


def count_row(python, workload, setup, backend, recorders=RECORDERS):
    """Instructions per traced run of each recorder; naive ÷ fast, and the ceiling naive ÷ replay."""
    row = {"workload": workload, "setup": setup, "backend": backend}
    for r in recorders:
        row[r] = _count(python, workload, setup, backend, r, 1) - _count(python, workload, setup, backend, r, 0)
    if set(RECORDERS) <= set(row):
        row["naive_over_fast"] = row["naive"] / row["fast"]
        row["ceiling"] = row["naive"] / row["replay"]
    return row


def _table(rows):
    print()
    for r in rows:
        print(f"{r['workload']:12s} {r['setup']:8s} Python {r['python']:7s} {r['backend']:10s} instructions per run: "
              f"fast {r['fast'] / 1e6:7.1f}M  naive {r['naive'] / 1e6:7.1f}M  "
              f"frames-only {r['frames-only'] / 1e6:6.1f}M  replay {r['replay'] / 1e6:6.1f}M  "
              f"naive/fast {r['naive_over_fast']:4.2f}x  ceiling {r['ceiling']:4.2f}x")
    print(json.dumps(rows))
    for r in rows:
        # frames-only and replay do a subset of every recorder's work: a count above fast's would mean the
        # measurement, not the tracer, is wrong.
        assert max(r["frames-only"], r["replay"]) < min(r["fast"], r["naive"]), r


def _count_all(jobs):
    """[(version, python, workload, setup, backend)] -> rows, two valgrind children at a time."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(lambda job: {"python": job[0], **count_row(job[1], *job[2:])}, jobs))


def _interpreters():
    """(version, python, backend) to count: this interpreter with settrace, and 3.13 (pyenv's) with sys.monitoring."""
    yield "%d.%d.%d" % sys.version_info[:3], sys.executable, "settrace"
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    python = Path(root) / "versions" / "3.13.0" / "bin" / "python3"
    if python.exists():
        yield "3.13.0", str(python), "monitoring"


needs_valgrind = pytest.mark.skipif(shutil.which("valgrind") is None,
                                    reason="valgrind not installed: instruction counts skipped")
opted_in = pytest.mark.skipif(not os.environ.get("CWM_BENCH_INSTRUCTIONS"),
                              reason="instruction counts take minutes: set CWM_BENCH_INSTRUCTIONS=1 to run them")


@needs_valgrind
@opted_in
def test_tracer_instructions():
    """Every workload and configuration, on this interpreter (settrace) and 3.13 (sys.monitoring): about 27 min, and
    about as long again for the package workload (toolz's tests; counted only where its sdist can be had)."""
    names = ["functions", "contest", "library"] + (["package"] if speed.package_root() else [])
    _table(_count_all([(v, py, w, s, b) for v, py, b in _interpreters() for w in names for s in speed.CONFIGS]))


@needs_valgrind
@opted_in
def test_tracer_instructions_per_function():
    """Each function of the suite alone, with function episodes, on this interpreter: which code the detector helps
    (about 8 min)."""
    module = speed._load(HERE / "tracer_workload.py", "cwm_bench_workload")
    version, python, backend = next(_interpreters())
    _table(_count_all([(version, python, fn.__name__, "episodes", backend) for fn, _ in module.function_calls()]))


if __name__ == "__main__":
    # One row, under this interpreter: how the step-by-step figures in RESULTS.md were counted on each commit, e.g.
    # `.venv/bin/python benchmarks/test_tracer_instructions.py functions episodes settrace fast naive`
    workload, setup, backend, *recorders = sys.argv[1:]
    print(json.dumps(count_row(sys.executable, workload, setup, backend, tuple(recorders) or RECORDERS)))
