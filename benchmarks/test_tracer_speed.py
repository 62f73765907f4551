"""Tracer speed: traced vs untraced, and the fast recorder vs the naive reference (tracer/naive.py), in one run.

Workloads (benchmarks/tracer_workload.py): a CPU-bound function suite on small inputs, the same kind of solutions
on contest-sized inputs, a test-like workload over real library code (pure-Python standard-library modules
copied into a temporary project, so they are traced as project code), and a real package's own test suite: toolz
(cwm.pypi.TOOLZ, the pinned sdist), the tests of its three namespaces, each test traced as `cwm-trace` traces it
(its own trace, function episodes inside). That last one is left out, saying why, where the package registry
cannot be reached.
Baselines: `naive` (tracer/naive.py: plain repr() of every local on every frame, the obvious tracer) and `naive-cut`
(the same with the fast recorder's budget-bounded serialiser, isolating what the change detector buys).
Every measurement first asserts that all three recorders write identical records. Times are CPU
seconds of this process (best of ROUNDS): steadier than wall time on a shared machine.
A fourth recorder, `FramesOnlyRecorder` (here), writes every frame with no locals at all: the cost every recorder
pays (events, frames, episodes). naive ÷ frames-only is a loose ceiling: no change detector, however good,
can be faster than naive by more than that. The tight one replays the fast recorder's own snapshots
(`ReplayRecorder`: the same records, asserted here) and is counted in test_tracer_instructions.py.

Under the toolkit's Python (3.11: settrace) the test measures in-process, then runs this file as a script under
Python 3.12 and 3.13 (pyenv's, when present) to measure both backends there. Figures go to the benchmark's
extra_info and are printed; the target is the fast recorder at least 3x faster than the naive one.
"""
import importlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from tracer import TraceConfig, trace_call  # noqa: E402
from tracer.recorder import Recorder  # noqa: E402
from tracer.naive import NaiveCutRecorder, NaiveRecorder  # noqa: E402
from tracer.values import TRUNCATION_MARKER  # noqa: E402

TARGET = 3.0
# What is asserted: the 3x is printed per row (TARGET MISSED lists the rows below it), and each workload's
# worst row must stay above the lower bound measured on the shared 2-core machine (best of ROUNDS CPU seconds, the
# recorders taking turns; 2026-11-22, eight full runs over 3.11 settrace and 3.12/3.13 both backends, three of them
# after confined lines), less a margin for noise: functions worst 1.70x (2.22x in the latest three); contest worst
# 3.36x, so the 3x itself is asserted there; library worst 0.77x (short scopes whose values change on most
# lines, user __repr__s that must run on every line leave the change detector little to skip;
# test_tracer_instructions.py shows how little: the replay ceiling there is below 3x on every library row); package
# (toolz's own tests, added 2026-11-22 in a third session) worst 0.55x in its first full run: most of its values are
# objects with a user __repr__ (curry, Signature, modules), which every recorder must run again on every line, in
# scopes of two or three lines; equal to naive in instructions, the replay ceiling 1.58x there.
FLOOR = {"functions": 1.5, "contest": TARGET, "library": 0.7, "package": 0.45}
ROUNDS = 5
LIBRARY_MODULES = ("difflib", "textwrap", "fractions", "shlex")
PACKAGE_TESTS = ("test_itertoolz", "test_functoolz", "test_dicttoolz")    # toolz's three namespaces
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


class FramesOnlyRecorder(NaiveRecorder):
    """Every frame, each with an empty locals dict: what a recorder costs before it looks at a single value."""

    def _snapshot(self, scope, after_own_line):
        scope.diff_base = scope.last
        scope.diff = scope.last = cur = {}
        scope.diff_size, scope.diff_cut = 0, 0
        return cur


_TAPE = []   # the snapshots RecordingRecorder took of a workload (all its traces, in order), with their diffs
_PLAYBACK = iter(_TAPE)


class RecordingRecorder(Recorder):
    """The fast recorder, keeping each snapshot and its diff for ReplayRecorder (record_tape)."""

    def _snapshot(self, scope, after_own_line):
        cur = super()._snapshot(scope, after_own_line)
        _TAPE.append((cur, scope.diff, scope.diff_size, scope.diff_cut))
        return cur


class ReplayRecorder(Recorder):
    """Plays back the snapshots RecordingRecorder took of the same workload (replay_tape): every frame with its real
    locals and no snapshot work at all, the floor of any recorder's cost (test_tracer_instructions.py counts it)."""

    def _snapshot(self, scope, after_own_line):
        cur, diff, size, cut = next(_PLAYBACK)
        scope.diff_base = scope.last
        scope.last, scope.diff, scope.diff_size, scope.diff_cut = cur, diff, size, cut
        return cur


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def package_root():
    """The source tree of toolz's sdist (cached after the first download), or None, printing why, when the package
    registry cannot be reached."""
    from cwm.pypi import TOOLZ, RegistryUnreachable, fetch_sdist
    try:
        return str(fetch_sdist(*TOOLZ))
    except RegistryUnreachable as e:
        print(f"package workload left out: {e}")
        return None


def _package_tests():
    """(root, [test functions]) of toolz's own suite, or None: the tests that take no fixtures, pass, and trace the
    same twice (some hash ids or draw random numbers: their traces differ from run to run whatever records them, so
    no recorder could be checked against another on them)."""
    root = package_root()
    if root is None:
        return None
    if root not in sys.path:
        sys.path.insert(0, root)
    config = TraceConfig(root=root, max_frames=10 ** 9, max_bytes=10 ** 12, **CONFIGS["episodes"])
    tests = []
    for name in PACKAGE_TESTS:
        module = importlib.import_module(f"toolz.tests.{name}")
        for test_name, fn in vars(module).items():
            if (test_name.startswith("test_") and inspect.isfunction(fn) and not inspect.signature(fn).parameters
                    and fn.__module__ == module.__name__):
                try:
                    fn()
                except Exception:
                    continue
                tests.append(fn)
    # Two passes over them all, as the benchmark makes them (state one test leaves may change another's trace)
    first, second = ([trace_call(fn, config=config, recorder=NaiveRecorder) for fn in tests] for _ in range(2))
    return root, [fn for fn, a, b in zip(tests, first, second)
                  if _comparable(a) == _comparable(b) and not _address_cut(a)]


def _address_cut(records):
    """Whether a value shown cut to the budget holds a memory address: the address's length, which varies from run to
    run, moves the cut, so two runs (of any recorders) differ after masking the address."""
    return any("0x" in text and text.endswith(TRUNCATION_MARKER)
               for r in records for f in r["frames"]
               for text in chain(f["locals"].values() if f["locals"] else (), [f["value"] or ""]))


def workloads(tmp, wanted=("functions", "contest", "library", "package")):
    """name -> (root to trace, [(entry function, its arguments)]): one trace per entry. The package workload only
    when wanted: finding its tests traces each of them twice."""
    functions = _load(HERE / "tracer_workload.py", "cwm_bench_workload")
    lib_root = Path(tmp) / "library"
    lib_root.mkdir()
    modules = []
    for name in LIBRARY_MODULES:
        source = Path(importlib.util.find_spec(name).origin)
        shutil.copy(source, lib_root / f"{name}.py")
        modules.append(_load(lib_root / f"{name}.py", f"cwm_bench_{name}"))
    shutil.copy(HERE / "tracer_workload.py", lib_root / "entry.py")
    entry = _load(lib_root / "entry.py", "cwm_bench_library_entry")
    found = {
        "functions": (str(HERE), [(functions.function_suite, ())]),
        "contest": (str(HERE), [(functions.contest_suite, ())]),
        "library": (str(lib_root), [(entry.library_suite, tuple(modules))]),
    }
    package = _package_tests() if "package" in wanted else None
    if package is not None:
        found["package"] = (package[0], [(test, ()) for test in package[1]])
    return found


def _best(fns, rounds=ROUNDS):
    """Best CPU seconds of each function over `rounds`, the functions taking turns within every round: the speed of a
    shared machine drifts over seconds, and interleaving puts the same drift on each."""
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            t0 = time.process_time()
            fn()
            best[k] = min(best[k], time.process_time() - t0)
    return best


def _comparable(records):
    return [_ADDRESS.sub("0x?", json.dumps(dict(r, stats={k: v for k, v in r["stats"].items() if k != "wall_s"})))
            for r in records]


# No content-hash record ids: cwm-trace's children compute none (the parent keys each record itself), so a run pays
# for none (before 2026-12-04 every recorder here hashed its records, a cost shared by all: RESULTS.md).
CONFIGS = {"entry": dict(depth=2, function_episodes=False, content_ids=False),    # one trace per entry
           "episodes": dict(depth=2, function_episodes=True, content_ids=False)}  # cwm-trace's: plus one per call


def trace_all(calls, config, recorder=Recorder):
    """The records of every call, each traced on its own (as `cwm-trace` traces each test)."""
    return [record for entry, args in calls for record in trace_call(entry, *args, config=config, recorder=recorder)]


def record_tape(calls, config):
    _TAPE.clear()
    return trace_all(calls, config, RecordingRecorder)


def replay_tape(calls, config):
    global _PLAYBACK
    _PLAYBACK = iter(_TAPE)
    return trace_all(calls, config, ReplayRecorder)


def measure(backend, root, calls, setup):
    """CPU seconds untraced / fast / naive (best of ROUNDS) after checking the two recorders agree."""
    config = TraceConfig(root=root, backend=backend, max_frames=10 ** 9, max_bytes=10 ** 12, **CONFIGS[setup])

    def untraced():
        for entry, args in calls:
            entry(*args)

    def fast():
        return trace_all(calls, config)

    def naive():
        return trace_all(calls, config, NaiveRecorder)

    def naive_cut():
        return trace_all(calls, config, NaiveCutRecorder)

    def frames_only():
        return trace_all(calls, config, FramesOnlyRecorder)

    records = fast()
    assert _comparable(records) == _comparable(naive()), "fast and naive recorders disagree"
    assert _comparable(records) == _comparable(naive_cut()), "fast and naive (cut serialiser) recorders disagree"
    frames = sum(len(r["frames"]) for r in records)
    assert frames > 0, f"nothing under {root} was traced"
    assert [len(r["frames"]) for r in frames_only()] == [len(r["frames"]) for r in records]
    record_tape(calls, config)
    replayed = replay_tape(calls, config)
    assert _comparable(replayed) == _comparable(records), "replaying the fast recorder's snapshots changed the records"
    (untraced,) = _best([untraced])
    fast_s, naive_s, naive_cut_s, frames_only_s = _best([fast, naive, naive_cut, frames_only])
    return {"python": "%d.%d.%d" % sys.version_info[:3], "backend": backend, "setup": setup, "frames": frames,
            "untraced_s": untraced, "fast_s": fast_s, "naive_s": naive_s, "naive_cut_s": naive_cut_s,
            "frames_only_s": frames_only_s, "traced_over_untraced": fast_s / untraced,
            "naive_over_fast": naive_s / fast_s, "naive_cut_over_fast": naive_cut_s / fast_s,
            "ceiling": naive_s / frames_only_s}


def measure_functions(backend):
    """naive ÷ fast per function of the suite (entry traces): which kinds of code the change detector helps."""
    module = _load(HERE / "tracer_workload.py", "cwm_bench_workload")
    config = TraceConfig(root=str(HERE), backend=backend, max_frames=10 ** 9, max_bytes=10 ** 12, **CONFIGS["entry"])
    ratios = {}
    for fn, args in module.function_calls():
        fast_s, naive_s = _best([lambda: trace_call(fn, *args, config=config),
                                 lambda: trace_call(fn, *args, config=config, recorder=NaiveRecorder)])
        ratios[fn.__name__] = naive_s / fast_s
    return ratios


def measure_all():
    backends = ["settrace"] + (["monitoring"] if sys.version_info >= (3, 12) else [])
    with tempfile.TemporaryDirectory(prefix="cwm-bench-") as tmp:
        return {name: [measure(b, root, calls, setup) for setup in CONFIGS for b in backends]
                for name, (root, calls) in workloads(tmp).items()}


def _other_interpreters():
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for version in ("3.12.1", "3.13.0"):
        path = Path(root) / "versions" / version / "bin" / "python3"
        if path.exists() and "%d.%d.%d" % sys.version_info[:3] != version:
            yield version, str(path)


def _line(workload, m):
    flag = "meets" if m["naive_over_fast"] >= TARGET else "BELOW"
    return (f"{workload:9s} {m['setup']:8s} Python {m['python']:7s} {m['backend']:10s} frames {m['frames']:6d}  "
            f"untraced {m['untraced_s'] * 1e3:7.1f} ms  fast {m['fast_s'] * 1e3:8.1f} ms  "
            f"naive {m['naive_s'] * 1e3:8.1f} ms  traced/untraced {m['traced_over_untraced']:5.0f}x  "
            f"naive/fast {m['naive_over_fast']:4.2f}x ({flag} {TARGET:.0f}x)  "
            f"naive-cut/fast {m['naive_cut_over_fast']:4.2f}x  ceiling naive/frames-only {m['ceiling']:4.2f}x")


def test_tracer_speed(benchmark):
    results = measure_all()
    for version, python in _other_interpreters():
        proc = subprocess.run([python, str(Path(__file__)), "--child"], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, f"benchmark under Python {version} failed:\n{proc.stderr[-2000:]}"
        for workload, ms in json.loads(proc.stdout.strip().splitlines()[-1]).items():
            results[workload] += ms
    lines = [_line(w, m) for w, ms in results.items() for m in ms]
    print("\n" + "\n".join(lines))
    per_function = measure_functions("auto")
    print(f"per function (Python {sys.version.split()[0]}, entry, naive/fast): "
          + ", ".join(f"{name} {ratio:.2f}" for name, ratio in per_function.items()))
    benchmark.extra_info["tracer_per_function"] = per_function
    benchmark.extra_info["tracer"] = results
    misses = [(w, m) for w, ms in results.items() for m in ms if m["naive_over_fast"] < TARGET]
    if misses:
        print(f"\nTARGET MISSED: {len(misses)} of {sum(map(len, results.values()))} rows are below "
              f"{TARGET:.0f}x naive/fast:")
        for w, m in misses:
            print(f"  {w} {m['setup']} Python {m['python']} {m['backend']}: {m['naive_over_fast']:.2f}x "
                  f"(timed ceiling {m['ceiling']:.2f}x)")
    for w, ms in results.items():
        worst = min(m["naive_over_fast"] for m in ms)
        assert worst >= FLOOR[w], f"{w}: naive/fast fell to {worst:.2f}x, below the {FLOOR[w]:.2f}x measured before"
    root, entry = HERE, _load(HERE / "tracer_workload.py", "cwm_bench_workload").function_suite
    config = TraceConfig(root=str(root), max_frames=10 ** 9, max_bytes=10 ** 12, **CONFIGS["episodes"])
    benchmark.pedantic(trace_call, args=(entry,), kwargs={"config": config}, rounds=ROUNDS, iterations=1)


def trace_repeatedly(workload, setup, backend, recorder, n):
    """Set a workload (or one function of the suite) up, trace it once to warm what sessions share (imports,
    bytecode facts), then `n` more times: what test_tracer_instructions.py counts under valgrind."""
    cls = {"fast": Recorder, "naive": NaiveRecorder, "frames-only": FramesOnlyRecorder}
    with tempfile.TemporaryDirectory(prefix="cwm-bench-") as tmp:
        found = workloads(tmp, [workload])
        if workload not in found:   # one function of the suite, by name
            module = _load(HERE / "tracer_workload.py", "cwm_bench_workload")
            found = {fn.__name__: (str(HERE), [(fn, args)]) for fn, args in module.function_calls()}
        root, calls = found[workload]
        config = TraceConfig(root=root, backend=backend, max_frames=10 ** 9, max_bytes=10 ** 12, **CONFIGS[setup])
        if recorder == "replay":    # the warm-up run records what the other runs play back
            record_tape(calls, config)
            for _ in range(n):
                replay_tape(calls, config)
        else:
            trace_all(calls, config, cls[recorder])
            for _ in range(n):
                trace_all(calls, config, cls[recorder])


if __name__ == "__main__" and sys.argv[1:] == ["--child"]:
    print(json.dumps(measure_all()))
if __name__ == "__main__" and sys.argv[1:2] == ["--trace"]:
    workload, setup, backend, recorder, n = sys.argv[2:]
    trace_repeatedly(workload, setup, backend, recorder, int(n))
