"""Value serialisation: the cut repr equals builtin repr's prefix, hostile reprs become placeholders, and the change
detector's proofs (witnesses) hold exactly when the repr would be unchanged."""
import json
import random
import time
from pathlib import Path

import pytest

from tracer import values


class _Tag:
    """An object with a user __repr__ (containers of these take describe's C-repr path, others the walk)."""

    def __init__(self, n):
        self.n = n

    def __repr__(self):
        return f"Tag({self.n})"


def _random_value(rng, depth=0):
    choice = rng.randrange(11 if depth < 3 else 6)
    if choice == 10:
        return _Tag(rng.randrange(100))
    if choice == 0:
        return rng.randrange(-10 ** 6, 10 ** 6)
    if choice == 1:
        return rng.choice(["", "a'b", 'q"', "it's \"both\"", "\n\t\\", "é✓", "x" * rng.randrange(300)])
    if choice == 2:
        return rng.choice([None, True, False, 1.5, -0.0, float("inf"), 1e300, b"by\x00tes", range(3), ...])
    if choice == 3:
        return rng.random()
    if choice == 4:
        return complex(rng.random(), -1)
    if choice == 5:
        raw = rng.choice([b"ba", b"'", b"'\"", b"x" * rng.randrange(300), b"\x00'" * rng.randrange(100)])
        return rng.choice([bytes, bytearray])(raw)
    items = [_random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    if choice == 6:
        return items
    if choice == 7:
        return tuple(items)
    if choice == 8:
        return {repr(k)[:5]: v for k, v in zip(items, items)}
    return frozenset(x for x in items if isinstance(x, (int, str))) if rng.random() < 0.5 else \
        {x for x in items if isinstance(x, (int, str))}


@pytest.mark.parametrize("budget", [1, 7, 40, 200])
def test_cut_repr_is_the_prefix_of_builtin_repr(budget):
    rng = random.Random(budget)
    for _ in range(400):
        v = _random_value(rng)
        full = repr(v)
        text, cut = values.safe_repr(v, budget)
        if len(full) <= budget:
            assert (text, cut) == (full, False)
        else:
            assert cut and text == full[:budget] + values.TRUNCATION_MARKER
        assert values.describe(v, budget)[0] == text


def test_self_containing_containers_match_builtin_repr():
    loop = [1]
    loop.append(loop)
    d = {"k": None}
    d["k"] = d
    for v in (loop, d, [loop, (loop,)]):
        assert values.safe_repr(v, 1000) == (repr(v), False)


class _Shows:
    """A user repr that reprs what it holds, which may be a container that holds this object."""

    def __init__(self, held):
        self.held = held

    def __repr__(self):
        return "Shows(%r)" % (self.held,)


def test_containers_a_user_repr_shows_again_match_builtin_repr():
    """Builtin repr marks every container it is inside; a user __repr__ called from inside the walk reprs them as
    `[...]` too, at whatever depth, and marks nothing it did not mark itself."""
    items = [None, 5]
    items[0] = _Shows(items)
    table = {"k": None}
    table["k"] = _Shows(table)
    outer = [0, (1, [])]
    outer[1][1].append(_Shows(outer))
    pair = [_Shows(None), 2]
    pair[0].held = (pair, {"again": pair})
    for v in (items, table, outer, pair, [items, table], (items,)):
        for budget in (1000, 12):
            full = repr(v)
            expected = full if len(full) <= budget else full[:budget] + values.TRUNCATION_MARKER
            assert values.safe_repr(v, budget)[0] == expected
            assert values.describe(v, budget)[0] == expected
    assert repr(items[0]) == "Shows([Shows([...]), 5])"     # marks taken back: the object alone shows the list


def test_huge_containers_cost_only_the_budget():
    big = list(range(10 ** 6))
    text, cut = values.safe_repr(big, 50)
    assert cut and text == repr(big[:20])[:50] + values.TRUNCATION_MARKER
    long = "'" * 10 ** 6
    assert values.safe_repr(long, 10)[0] == repr(long)[:10] + values.TRUNCATION_MARKER


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_huge_bytes_cost_only_the_budget(kind):
    """A bytes-like value is repr'd as far as the budget needs (a 4 MB text a line for a sieve's megabyte once), with
    the quote builtin repr picks for the whole: the prefix alone may pick the other one."""
    for raw in (b"\x00\x01" * 10 ** 6, b"x" * 10 ** 6 + b"'", b"'" + b"x" * 10 ** 6 + b'"', b"'" * 10 ** 6):
        value = kind(raw)
        full = repr(value)
        for budget in (5, 200):
            assert values.safe_repr(value, budget)[0] == full[:budget] + values.TRUNCATION_MARKER
            assert values.describe(value, budget)[0] == full[:budget] + values.TRUNCATION_MARKER
            assert values.safe_repr([1, value], budget)[0] == repr([1, value])[:budget] + values.TRUNCATION_MARKER
    big = kind(64 << 20)
    started = time.perf_counter()
    values.safe_repr(big, 200)
    values.describe([big], 200)
    assert time.perf_counter() - started < 0.2     # builtin repr alone: about 0.4 s, and a 256 MB text


def test_hostile_reprs_become_placeholders_naming_the_type(monkeypatch):
    class Raises:
        def __repr__(self):
            raise KeyError("nope")

    class Recurses:
        def __repr__(self):
            return repr(self)

    class Slow:
        def __repr__(self):
            while True:
                pass

    class NotStr:
        def __repr__(self):
            return 42

    monkeypatch.setattr(values, "REPR_TIMEOUT_S", 0.05)
    assert values.safe_repr(Raises(), 100)[0] == "<Raises object (repr raised KeyError)>"
    assert values.safe_repr(Recurses(), 100)[0] == "<Recurses object (repr raised RecursionError)>"
    assert values.safe_repr(Slow(), 100)[0] == "<Slow object (repr timed out)>"
    assert values.safe_repr(NotStr(), 100)[0] == "<NotStr object (repr raised TypeError)>"
    assert values.safe_repr([1, Raises()], 100)[0] == "[1, <Raises object (repr raised KeyError)>]"
    assert values.safe_repr(10 ** 5000, 30)[0].startswith("<int object (repr raised ValueError)>")


def test_repr_guard_keeps_the_programs_alarm(monkeypatch):
    import signal
    if not hasattr(signal, "setitimer"):
        pytest.skip("no setitimer on this platform")

    class Fine:
        def __repr__(self):
            return "fine"

    fired = []
    old = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 5.0)
        assert values.safe_repr(Fine(), 10)[0] == "fine"
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 4.0 < left <= 5.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert not fired


@pytest.mark.parametrize("session", [False, True])
def test_repr_guard_hands_the_alarm_back(monkeypatch, session):
    """In a tracing session and outside one: a hung repr is cut off, the program's own SIGALRM handler is in place
    again afterwards, and an alarm of the program's that fires outside a repr still reaches that handler."""
    import signal
    import time
    from fractions import Fraction
    if not hasattr(signal, "setitimer"):
        pytest.skip("no setitimer on this platform")

    class Slow:
        def __repr__(self):
            while True:
                pass

    def handler(*_):
        fired.append(1)

    fired = []
    monkeypatch.setattr(values, "REPR_TIMEOUT_S", 0.05)
    old = signal.signal(signal.SIGALRM, handler)
    try:
        if session:
            values.install_alarm()
        assert values.guarded_repr(Slow()) == (None, "repr timed out")
        assert values.guarded_repr(Fraction(1, 3)) == ("Fraction(1, 3)", None)
        assert (signal.getsignal(signal.SIGALRM) is values._on_alarm) == session
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        deadline = time.monotonic() + 2
        while not fired and time.monotonic() < deadline:
            pass
        assert fired == [1]
        if session:
            values.uninstall_alarm()
        assert signal.getsignal(signal.SIGALRM) is handler
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


_SWALLOWING_REPR = """
import gc, sys
from tracer import TraceConfig, trace_call, values
values.REPR_TIMEOUT_S = 0.05

class Finalized:
    def __del__(self):      # where an exception is swallowed ("Exception ignored in")
        for _ in range(100):
            pass

class Churn:
    def __repr__(self):     # most of its time inside collections, which run gc callbacks and finalizers
        while True:
            junk = [Finalized()]
            junk.append(junk)
            del junk
            gc.collect()

def f():
    x = Churn()
    return 1

records = trace_call(f, config=TraceConfig(root=sys.argv[1], backend=sys.argv[2]))
print(records[0]["frames"][2]["locals"]["x"])
"""


def test_a_hung_repr_is_cut_off_even_where_exceptions_are_swallowed(tmp_path, backend):
    """The alarm that ends a slow repr may land in a finalizer or a gc callback, where the interpreter swallows the
    exception: it fires again until the repr ends. The session's own gc hook runs no Python code, so it is never
    where the alarm lands. (Before: the first alarm was swallowed by that hook and the repr ran forever.)"""
    import subprocess
    import sys
    program = tmp_path / "churn.py"
    program.write_text(_SWALLOWING_REPR)
    proc = subprocess.run([sys.executable, str(program), str(tmp_path), backend], capture_output=True, text=True,
                          timeout=30, env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "<Churn object (repr timed out)>"


def test_repr_guard_leaves_signals_alone_off_the_main_thread():
    """Only the main thread receives SIGALRM, so another thread's reprs go unguarded by it (and signal.signal would
    raise there): the program's running timer and handler stay exactly as they were, even during the repr."""
    import signal
    import threading
    if not hasattr(signal, "setitimer"):
        pytest.skip("no setitimer on this platform")

    class PeeksAtTimer:
        def __repr__(self):
            return "timer left > 1s" if signal.getitimer(signal.ITIMER_REAL)[0] > 1 else "timer re-armed"

    class Raises:
        def __repr__(self):
            raise KeyError("nope")

    results = []
    old = signal.signal(signal.SIGALRM, signal.SIG_IGN)
    try:
        signal.setitimer(signal.ITIMER_REAL, 5.0, 5.0)
        worker = threading.Thread(target=lambda: results.extend(
            [values.guarded_repr(PeeksAtTimer()), values.guarded_repr(Raises()), signal.getitimer(signal.ITIMER_REAL)]))
        worker.start()
        worker.join()
        assert results[:2] == [("timer left > 1s", None), (None, "repr raised KeyError")]
        left, interval = results[2]
        assert 4.0 < left <= 5.0 and interval == 5.0
        assert signal.getsignal(signal.SIGALRM) is signal.SIG_IGN
        assert values.guarded_repr(PeeksAtTimer()) == ("timer re-armed", None)     # the main thread is guarded
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _proof_holds(before, after, budget):
    text, kind, proof = values.describe(before, budget)
    if kind == values.ATOM:
        return proof is after
    if kind == values.WITNESS:
        return values.still_same(after, proof)
    if kind == values.DEFAULT:
        return proof.holds(after)
    return False


@pytest.mark.parametrize("budget", [5, 30, 200])
def test_witness_never_vouches_for_a_changed_repr(budget):
    """Mutate random containers in place; whenever the proof says "unchanged", the repr must really be unchanged."""
    rng = random.Random(budget)
    vouched = 0
    for _ in range(600):
        v = [_random_value(rng) for _ in range(rng.randrange(1, 8))]
        if rng.random() < 0.3:
            v = {str(i): x for i, x in enumerate(v)}
        text, kind, proof = values.describe(v, budget)
        target = v
        for _ in range(rng.randrange(3)):  # walk into a nested container sometimes
            inner = list(target.values()) if isinstance(target, dict) else target
            lists = [x for x in inner if type(x) in (list, dict)]
            if lists:
                target = rng.choice(lists)
        op = rng.randrange(5)
        if isinstance(target, dict):
            key = rng.choice(list(target) or ["new"])
            if op == 0:
                target[key] = rng.randrange(3)
            elif op == 1 and target:
                del target[key]
            elif op == 2:
                target["zz"] = 1
        else:
            if op == 0 and target:
                target[rng.randrange(len(target))] = rng.randrange(3)
            elif op == 1 and target:
                target.pop()
            elif op == 2:
                target.append(rng.randrange(3))
            elif op == 3:
                target.reverse()
        if kind in (values.WITNESS, values.DEFAULT) and _proof_holds_after(proof, kind, v):
            vouched += 1
            assert values.safe_repr(v, budget)[0] == text
    assert vouched > 50  # the proof is useful, not just always "changed"


def _proof_holds_after(proof, kind, value):
    return values.still_same(value, proof) if kind == values.WITNESS else proof.holds(value)


def test_default_repr_proof_tracks_identity_and_class():
    class Plain:
        pass

    a, b = Plain(), Plain()
    text, kind, proof = values.describe(a, 100)
    assert kind == values.DEFAULT and proof.holds(a) and not proof.holds(b)
    Plain.__repr__ = lambda self: "custom"
    assert not proof.holds(a)


def test_class_and_function_proofs_track_their_names():
    class K:
        pass

    def f():
        pass

    for v, rename in ((K, lambda: setattr(K, "__qualname__", "L")), (f, lambda: setattr(f, "__qualname__", "g"))):
        text, kind, proof = values.describe(v, 200)
        assert kind == values.DEFAULT and text == repr(v) and proof.holds(v)
        rename()
        assert not proof.holds(v) and values.describe(v, 200)[0] != text


def test_atomic_values():
    assert values.is_atomic((1, "a", (2.0, None)))
    assert not values.is_atomic((1, [2]))
    assert not values.is_atomic(type("S", (str,), {})("x"))


def test_stable_numbers_first_seen_first_numbered():
    """Addresses, a mock's id and thread idents become ordinals in order of first appearance; the same number the
    same ordinal whatever way it is written (a mock's decimal id is its address); other hex is left alone."""
    numbers = values.StableNumbers()
    text = numbers.text
    assert text("<object object at 0x7ffa1d5768e0>") == "<object object at 0x1>"
    assert text("[<A at 0x7f0000000010>, <object object at 0x7ffa1d5768e0>]") == "[<A at 0x2>, <object object at 0x1>]"
    assert text("<MagicMock id='%d'>" % 0x7f0000000010) == "<MagicMock id='2'>"
    assert text("<Thread(t, started daemon 139912)>") == "<Thread(t, started daemon 3)>"
    assert text("<Thread(t, stopped 139912)>") == "<Thread(t, stopped 3)>"
    assert text("<weakref at 0x7f0000000020; to 'A' at 0x7f0000000010>") == "<weakref at 0x4; to 'A' at 0x2>"
    for plain in ("0xdeadbeef", "format 0x1234567", "no numbers", "'at 0x'"):
        assert text(plain) == plain
    assert values.StableNumbers().text("<B at 0x7f0000000010>") == "<B at 0x1>", "ordinals are per trace"


def test_stabilised_records_keep_the_diff_and_a_nul_in_a_text(here, backend):
    """Two objects, then the first again: ordinals 1, 2, then 1, and the ".." diff as the raw run shows it; a text
    holding a NUL (the rewrite joins a frame's texts with NUL) is rewritten one text at a time."""
    from tracer import TraceConfig, trace_call

    (record,) = trace_call(_two_objects, config=TraceConfig(root=str(here), backend=backend))
    (raw,) = trace_call(_two_objects, config=TraceConfig(root=str(here), backend=backend, raw_values=True))
    last = [f["locals"] for f in record["frames"] if f["kind"] == "line"][-1]
    assert last == {"a": "..", "b": "..", "weird": "..", "c": "<object object at 0x1>"}
    first_weird = next(f["locals"]["weird"] for f in record["frames"] if f["locals"] and "weird" in f["locals"])
    assert first_weird == "<\0 at 0x3>"
    assert [[k for k, v in f["locals"].items() if v == ".."] for f in record["frames"] if f["locals"]] == \
        [[k for k, v in f["locals"].items() if v == ".."] for f in raw["frames"] if f["locals"]]
    assert "<object object at 0x2>" in json.dumps(record["frames"])


class _Nul:
    def __repr__(self):
        return "<\0 at 0x%x>" % id(self)


def _two_objects():
    a = object()
    b = object()
    weird = _Nul()
    c = a
    return c


def test_a_return_or_exception_value_alone_is_stabilised(here, backend):
    """The only address of a scope is in its return value (or its exception's message): the record still shows an
    ordinal, not the run's address, so two runs give the same record."""
    from tracer import TraceConfig, trace_call

    for fn, kind in ((_make_object, "return"), (_raise_with_object, "exception")):
        runs = [trace_call(fn, config=TraceConfig(root=str(here), backend=backend))[0]["frames"] for _ in range(2)]
        (value,) = [f["value"] for f in runs[0] if f["kind"] == kind][-1:]
        assert "at 0x1>" in value and json.dumps(runs[0]) == json.dumps(runs[1]), (kind, value)


def _make_object():
    return object()


def _raise_with_object():
    raise ValueError(repr(object()))
