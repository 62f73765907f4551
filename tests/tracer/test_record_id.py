"""Record ids: the content hash shards deduplicate on. It must depend on everything a record says and on nothing
else: not on memory addresses, wall time, the backend, or which equal objects happen to be shared."""
import copy
import json

import pytest

from tracer import TraceConfig, trace_call
from tracer.recorder import record_id


def _corpus_records(corpus, here, backend):
    records = []
    for fn in corpus.PROGRAMS.values():
        records += trace_call(fn, config=TraceConfig(root=str(here), backend=backend, depth=3, function_episodes=True))
    return records


def test_ids_survive_a_json_round_trip(corpus, here, backend):
    """What a shard's reader gets back hashes to the id the tracer wrote."""
    records = _corpus_records(corpus, here, backend)
    assert len(records) > 20
    for record in records:
        assert record["id"] == record_id(record) == record_id(json.loads(json.dumps(record)))


def test_without_content_ids_the_records_are_the_same(corpus, here, backend, compare):
    """cwm-trace keys records itself and asks for no content hash: nothing else in a record may depend on that.
    (Each program is traced with ids, without, and with again; one whose two traces with ids differ - it changes
    state a second run sees - is not a comparison. Records are compared with memory addresses masked: a value such
    as `<generator object at 0x...>` may sit at one address in two of the runs and at another in the third.)"""
    def traced(fn, content_ids):
        config = TraceConfig(root=str(here), backend=backend, depth=3, function_episodes=True, content_ids=content_ids)
        return trace_call(fn, config=config)

    compared = 0
    for fn in corpus.PROGRAMS.values():
        hashed, plain, again = traced(fn, True), traced(fn, False), traced(fn, True)
        assert all(r["id"] == "" for r in plain)
        if compare(hashed) == compare(again):
            assert [record_id(r) for r in plain] == [r["id"] for r in hashed]
            assert compare([{**r, "id": record_id(r)} for r in plain]) == compare(hashed)
            compared += len(plain)
    assert compared > 20


def _edits(record):
    """Every single-field change to a record that makes it say something else."""
    frames = record["frames"]
    yield "outcome", lambda r: r.update(outcome=r["outcome"] + "!")
    yield "context", lambda r: r.update(context=r["context"] + " ")
    yield "origin", lambda r: r["origin"].update(qualname="other")
    yield "stats", lambda r: r["stats"].update(frames=r["stats"]["frames"] + 1)
    yield "a frame dropped", lambda r: r["frames"].pop()
    if len(frames) > 1 and frames[0] != frames[1]:
        yield "two frames swapped", lambda r: r["frames"].insert(0, r["frames"].pop(1))
    for key in ("kind", "path", "source"):
        yield f"frame {key}", lambda r, key=key: r["frames"][-1].update({key: r["frames"][-1][key] + "x"})
    for key in ("depth", "line"):
        yield f"frame {key}", lambda r, key=key: r["frames"][-1].update({key: r["frames"][-1][key] + 1})
    yield "frame value", lambda r: r["frames"][-1].update(value="changed")
    with_locals = [i for i, f in enumerate(frames) if f["locals"]]
    if with_locals:
        i = with_locals[-1]
        name = next(iter(frames[i]["locals"]))
        yield "a local's text", lambda r: r["frames"][i]["locals"].update({name: r["frames"][i]["locals"][name] + "1"})
        yield "a local's name", lambda r: r["frames"][i].update(
            locals={(n + "_" if n == name else n): t for n, t in r["frames"][i]["locals"].items()})
    places = {(f["path"], f["line"]) for f in frames}
    if len(places) > 1:   # the same place, another line's text: the places table must not merge them
        yield "a source line", lambda r: r["frames"][0].update(source=r["frames"][-1]["source"] + "#")


def test_every_edit_changes_the_id(corpus, here, backend):
    checked = 0
    for record in _corpus_records(corpus, here, backend):
        if len(record["frames"]) < 2:
            continue
        for what, edit in _edits(record):
            changed = copy.deepcopy(record)
            edit(changed)
            assert record_id(changed) != record["id"], f"{what}: the id did not change"
            checked += 1
    assert checked > 200


@pytest.mark.parametrize("before,after,same", [
    ("<A object at 0x7f3a2b1c4d50>", "<A object at 0x7f00000ff000>", True),
    ("<A object at 0x7F3A2B1C4D50>", "<A object at 0x7f3a2b1c4d51>", True),
    ("0x123456 at the start", "0xabcdef at the start", True),
    ("'0x1234567'", "'0x7654321'", True),               # a str's repr: its closing quote follows
    ("(0x1234567, 0x7654321)", "(0xabcdefa, 0x1111111)", True),
    ("中文 0xdeadbeefcafe 中文", "中文 0x0123456789ab 中文", True),
    ("short 0x12345", "short 0x12346", False),          # five hex digits: not an address...
    ("short 0x12345>", "short 0x12346>", False),
    ("at the end 0x1234567", "at the end 0x7654321", False),    # ...nor hex at the very end of a text
    ("0xg123456>", "0xg123457>", False),
    ("0x", "0y", False),
])
def test_addresses_are_masked_and_only_they(before, after, same):
    def record(text):
        frame = {"kind": "line", "depth": 0, "path": "m.py", "line": 3, "source": "x = f()",
                 "locals": {"x": text}, "value": None}
        return {"schema": "cwm.trace/1", "origin": {"input": text}, "context": "", "frames": [frame],
                "outcome": "returned", "stats": {"frames": 1, "truncated_values": 0}}
    assert (record_id(record(before)) == record_id(record(after))) is same


def test_ids_ignore_time_backend_and_object_sharing():
    """Only the content counts: not the wall time, the backend, or which equal objects are shared (why the canonical
    form is pickled without pickle's memo, which would write a shared object's second occurrence as a reference)."""
    shared = "shared " * 3
    frame = {"kind": "line", "depth": 0, "path": "m.py", "line": 1, "source": "s = t",
             "locals": {"s": shared, "t": shared}, "value": None}
    record = {"frames": [frame, frame], "stats": {"frames": 2, "wall_s": 0.1}, "backend": "settrace"}
    other = {"frames": [dict(frame, locals={"s": "shared " * 3, "t": "shared " * 3}), copy.deepcopy(frame)],
             "stats": {"frames": 2, "wall_s": 9.0}, "backend": "monitoring"}
    assert record_id(record) == record_id(other)
    assert record_id(record) != record_id(dict(record, frames=[frame]))
