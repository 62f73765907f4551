"""Budgets and record identity: an over-budget trace is kept with its outcome, never dropped or silently cut."""
import json
import re

from tracer import TraceConfig, trace_call


def _spin(n):
    total = 0
    for i in range(n):
        total += i
    return total


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


def test_soft_timeout_records_the_trace(here, backend):
    (record,) = trace_call(_forever, config=_config(here, backend, soft_timeout_s=0.3, max_frames=10 ** 9,
                                                    max_bytes=10 ** 12))
    assert record["outcome"] == "timeout" and len(record["frames"]) > 10


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
