"""Budgets and record identity: an over-budget trace is kept with its outcome, never dropped or silently cut."""
import json
import re
import time

import pytest

from tracer import TraceConfig, trace_call
from tracer.naive import NaiveRecorder


def _spin(n):
    total = 0
    for i in range(n):
        total += i
    return total


class _EndsLikeACut:
    def __repr__(self):
        return "short...<cut>"      # a repr that ends the way a cut one does, well within the budget


def _cut_lookalikes(n):
    v, text = _EndsLikeACut(), "a long string " * 30
    for i in range(n):
        v = _EndsLikeACut() if i % 2 else v
        text = text[1:]
    return v


def _forever():
    x = 0
    while True:
        x += 1


def _config(here, backend, **kw):
    return TraceConfig(root=str(here), backend=backend, **kw)


def test_frame_budget(here, backend):
    (record,) = trace_call(_spin, 1000, config=_config(here, backend, max_frames=50))
    assert record["outcome"] == "frame_budget" and len(record["frames"]) == 50
    assert record["stats"]["frames"] == 50 and record["stats"]["budget"] == "frames"


def test_byte_budget(here, backend):
    (record,) = trace_call(_spin, 1000, config=_config(here, backend, max_bytes=4000))
    assert record["outcome"] == "frame_budget" and record["stats"]["budget"] == "bytes"
    assert 10 < len(record["frames"]) and 0.8 * 4000 < len(json.dumps(record)) < 4000 * 1.2
    (whole,) = trace_call(_spin, 1000, config=_config(here, backend))
    assert whole["frames"][:len(record["frames"])] == record["frames"]  # a prefix, nothing reordered or lost


def _estimated_bytes(frame):
    """What DESIGN's byte budget counts for one frame, written out independently of the recorder: 105 for the
    frame's keys and punctuation, its path and source, and per local its name, its shown text and 8 (quotes,
    colon, comma); a return/exception frame its value."""
    size = 105 + len(frame["path"]) + len(frame["source"])
    if frame["locals"] is None:
        return size + len(frame["value"])
    return size + sum(len(name) + len(text) + 8 for name, text in frame["locals"].items())


def test_byte_budget_keeps_exactly_the_frames_that_fit(here, backend):
    """The oracle: from the unbudgeted trace, a trace starts at 400 + len(context) bytes and keeps frames while
    the running total stays within max_bytes; the first frame that would pass it ends the trace. Budgets exactly
    at a boundary, one byte under it, and one over it: a check that lets the total reach past the budget (or
    stops one frame early) keeps a different count."""
    (whole,) = trace_call(_spin, 200, config=_config(here, backend))
    totals, total = [], 400 + len(whole["context"])
    for frame in whole["frames"]:
        total += _estimated_bytes(frame)
        totals.append(total)
    for k in (3, 17, 40):
        for max_bytes in (totals[k] - 1, totals[k], totals[k] + 1):
            (record,) = trace_call(_spin, 200, config=_config(here, backend, max_bytes=max_bytes))
            expected = sum(t <= max_bytes for t in totals)
            assert len(record["frames"]) == expected == (k + 1 if max_bytes >= totals[k] else k), max_bytes
            assert record["frames"] == whole["frames"][:expected]
            assert record["outcome"] == "frame_budget" and record["stats"]["budget"] == "bytes"


@pytest.mark.parametrize("max_bytes", [1200, 2500, 6000])
def test_byte_budget_ends_traces_where_the_naive_recorder_does(corpus, compare, here, backend, max_bytes):
    """The fast recorder measures a frame from its snapshot's diff; the naive one from the frame itself. With short
    values (many shown cut) and small byte budgets, both must end every trace at the same frame."""
    ended = cut = 0
    for name, fn in corpus.PROGRAMS.items():
        config = _config(here, backend, depth=3, function_episodes=True, max_bytes=max_bytes, value_budget=12)
        fast, naive = trace_call(fn, config=config), trace_call(fn, config=config, recorder=NaiveRecorder)
        assert compare(fast) == compare(naive), name
        ended += sum(r["stats"].get("budget") == "bytes" for r in fast)
        cut += sum(r["stats"]["truncated_values"] for r in fast)
    assert ended and cut, "no trace reached the byte budget or showed a cut value: the check checked nothing"


def test_cut_values_are_counted_as_the_naive_recorder_counts_them(compare, here, backend):
    for budget in (10, 200):
        config = _config(here, backend, value_budget=budget)
        fast, naive = trace_call(_cut_lookalikes, 6, config=config), trace_call(_cut_lookalikes, 6, config=config,
                                                                                recorder=NaiveRecorder)
        assert compare(fast) == compare(naive)
        assert fast[-1]["stats"]["truncated_values"] > 0


def test_soft_timeout_records_the_trace(here, backend):
    start = time.monotonic()
    (record,) = trace_call(_forever, config=_config(here, backend, soft_timeout_s=0.3, max_frames=10 ** 9,
                                                    max_bytes=10 ** 12))
    elapsed = time.monotonic() - start
    assert record["outcome"] == "timeout" and len(record["frames"]) > 10
    # stopped by the soft timeout itself: not before it, and not long after (a loaded machine gets 2 s of slack)
    assert 0.3 <= elapsed < 2.3, elapsed
    assert record["frames"][-1]["kind"] == "line" and record["stats"]["frames"] == len(record["frames"])


def test_ids_are_stable_hex_and_ignore_time(here, backend):
    first = trace_call(_spin, 5, config=_config(here, backend))
    second = trace_call(_spin, 5, config=_config(here, backend))
    assert first[0]["id"] == second[0]["id"] and re.fullmatch(r"[0-9a-f]{32}", first[0]["id"])
    other = trace_call(_spin, 6, config=_config(here, backend))
    assert other[0]["id"] != first[0]["id"]


def test_hooks_are_given_back(here, backend):
    """After tracing, the interpreter's hooks are as they were: a previous trace function is restored and the
    sys.monitoring tool id is free again."""
    import sys

    previous = []

    def outer(frame, event, arg):
        previous.append(event)
        return None

    sys.settrace(outer)
    try:
        trace_call(_spin, 3, config=_config(here, backend))
        assert sys.gettrace() is outer
    finally:
        sys.settrace(None)
    if sys.version_info >= (3, 12):
        assert all(sys.monitoring.get_tool(i) is None for i in range(6))


def _leaf(i):
    return i + 1


def _many_calls(n):
    total = 0
    for i in range(n):
        total += _leaf(i)
    return total


def test_function_episode_cap(here, backend, compare):
    """Past max_episodes no more function episodes are cut; the entry record counts the calls it skipped, and the
    entry trace itself (its inlined callees included) is whole."""
    capped = trace_call(_many_calls, 30, config=_config(here, backend, function_episodes=True, max_episodes=7))
    whole = trace_call(_many_calls, 30, config=_config(here, backend, function_episodes=True))
    assert [r["origin"]["qualname"] for r in capped[:-1]] == ["_leaf"] * 7
    assert compare(capped[:-1]) == compare(whole[:7])
    assert capped[-1]["stats"]["episodes_skipped"] == 23 and "episodes_skipped" not in whole[-1]["stats"]
    assert capped[-1]["frames"] == whole[-1]["frames"] and capped[-1]["outcome"] == "returned"
