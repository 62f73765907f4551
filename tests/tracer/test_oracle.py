"""The recorder against independent oracles: the naive re-serialise-everything recorder (the ".." diff is sound),
the other backend (both give the same frames), and the interpreter's own line events (nothing missed or invented).
"""
import gc
import sys
import weakref
from pathlib import Path

import pytest

from tracer import TraceConfig, trace_call
from tracer.naive import NaiveRecorder
from tracer.recorder import Recorder

HERE = Path(__file__).resolve().parent

PROGRAMS = [
    "aliasing", "async", "class_state", "classes", "closures", "comprehensions", "del_side_effect", "exceptions",
    "generators", "hostile_values", "id_reuse", "inert_lines", "loops", "methods_and_objects", "mutation_in_callee",
    "raises", "recursion", "sorted_callback", "with",
]


def _config(backend, **kw):
    kw.setdefault("function_episodes", True)
    kw.setdefault("depth", 3)
    return TraceConfig(root=str(HERE), backend=backend, **kw)


def test_corpus_list_is_complete(corpus):
    assert sorted(corpus.PROGRAMS) == PROGRAMS


@pytest.mark.parametrize("name", PROGRAMS)
def test_fast_diff_equals_naive(corpus, compare, name, backend):
    fn = corpus.PROGRAMS[name]
    fast = trace_call(fn, config=_config(backend))
    naive = trace_call(fn, config=_config(backend), recorder=NaiveRecorder)
    assert fast, "nothing was traced"
    assert fast[-1]["frames"][0]["kind"] == "call"
    assert compare(fast) == compare(naive)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring needs Python 3.12+: one backend only here")
@pytest.mark.parametrize("name", PROGRAMS)
def test_backends_give_the_same_frames(corpus, compare, name):
    fn = corpus.PROGRAMS[name]
    via_monitoring = trace_call(fn, config=_config("monitoring"))
    via_settrace = trace_call(fn, config=_config("settrace"))
    assert [r["backend"] for r in via_monitoring] == ["monitoring"] * len(via_monitoring)
    assert compare(via_monitoring) == compare(via_settrace)
    assert [r["id"] for r in via_monitoring] == [r["id"] for r in via_settrace]


def _interpreter_lines(fn):
    """(function name, line) of every line event the interpreter reports in the corpus file: a bare settrace."""
    seen = []
    path = fn.__code__.co_filename

    def local(frame, event, arg):
        if event == "line":
            seen.append((frame.f_code.co_name, frame.f_lineno))
        return local

    def global_(frame, event, arg):
        if frame.f_code.co_filename == path and frame.f_code.co_name != "<module>":
            return local
        return None

    sys.settrace(global_)
    try:
        fn()
    except Exception:
        pass
    finally:
        sys.settrace(None)
    return seen


@pytest.mark.parametrize("name", ["loops", "recursion", "generators", "exceptions", "with", "closures"])
def test_line_frames_match_the_interpreter(corpus, name, backend):
    fn = corpus.PROGRAMS[name]
    expected = _interpreter_lines(fn)
    # The interpreter's own line events: comprehensions as it runs them (the canonical form merges their lines)
    (entry,) = trace_call(fn, config=_config(backend, depth=100, function_episodes=False, native_comprehensions=True))
    got = []
    for frame in entry["frames"]:
        if frame["kind"] == "line":
            got.append(frame["line"])
    assert got == [line for _, line in expected]


def test_depth_limits_inlining_and_episodes_cover_callees(corpus, backend):
    fn = corpus.PROGRAMS["recursion"]
    (shallow,) = trace_call(fn, config=_config(backend, depth=0, function_episodes=False))
    assert {f["depth"] for f in shallow["frames"]} == {0}
    records = trace_call(fn, config=_config(backend, depth=1))
    entry = records[-1]
    assert max(f["depth"] for f in entry["frames"]) == 1
    episodes = [r for r in records[:-1]]
    qualnames = [r["origin"]["qualname"] for r in episodes]
    # _fib(5) makes 15 calls, _build(3) makes 4: each call is its own trace, context = its own source.
    assert qualnames.count("_fib") == 15 and qualnames.count("_build") == 4
    for r in episodes:
        assert r["frames"][0]["kind"] == "call" and r["frames"][0]["depth"] == 0
        assert r["context"].splitlines()[0].endswith("  # << START_OF_TRACE")
        assert r["origin"]["kind"] == "function" and r["outcome"] == "returned"


def test_library_code_is_stepped_over_but_callbacks_are_traced(corpus, backend):
    (entry,) = trace_call(corpus.PROGRAMS["sorted_callback"], config=_config(backend, function_episodes=False))
    paths = {f["path"] for f in entry["frames"]}
    assert paths == {"corpus.py"}
    lambdas = [f for f in entry["frames"] if f["kind"] == "call" and "lambda" in f["source"]]
    assert len(lambdas) == 6 and {f["depth"] for f in lambdas} == {1}


def test_raised_and_caught_exceptions(corpus, backend):
    (raised,) = trace_call(corpus.PROGRAMS["raises"], config=_config(backend, function_episodes=False))
    assert raised["outcome"] == "raised"
    assert raised["frames"][-1]["kind"] == "exception" and raised["frames"][-1]["value"] == "KeyError('b')"
    (caught,) = trace_call(corpus.PROGRAMS["exceptions"], config=_config(backend, depth=0, function_episodes=False))
    kinds = [f["kind"] for f in caught["frames"]]
    # Caught in the same frame: an `exception` frame on the raising line, then the handler's lines.
    first = kinds.index("exception")
    assert caught["frames"][first]["value"] == "ZeroDivisionError('division by zero')"
    assert kinds[first + 1] == "line" and "except" in caught["frames"][first + 1]["source"]
    assert caught["outcome"] == "returned" and kinds[-1] == "return"



def test_a_finished_session_is_freed_without_the_garbage_collector(corpus, backend):
    """No reference cycle keeps a session alive once trace_call returns: its recorder, scopes and episodes go when
    the call ends, its records when the caller drops them. (A cycle kept the entry record's frames until a full
    collection, and every full collection before that scanned them.)"""
    made = weakref.WeakSet()

    class Watched(Recorder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.add(self)

    gc.collect()
    gc.disable()
    try:
        records = trace_call(corpus.PROGRAMS["recursion"], config=_config(backend), recorder=Watched)
        assert len(records) > 1
        assert len(made) == 0, "the recorder outlived its session: a reference cycle holds it"
    finally:
        gc.enable()
