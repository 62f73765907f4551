"""Quiet lines against the naive oracle: lines whose bytecode stores into no object, yet change a container or an
object that a local shows, through Python dunders, properties, builtins that call back, C callables in dunder slots
or iterators, shadowed builtins, finalizers, generators, other threads and the cycle collector.

The cases live in quiet_cases.py. Each runs with the helpers' code (the classes with side-effecting dunders,
the generators...) inside the traced root, where the tracer sees it run, and again with the helpers in a module
outside the root, where it does not (sys.monitoring disables events for out-of-scope code). Every case must give
the same records from the fast and the naive recorder, and the naive trace must show the change (else the case
exercises nothing).
"""
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from tracer import TraceConfig, trace_call
from tracer.format import UNCHANGED
from tracer.naive import NaiveRecorder
from tracer.recorder import Recorder

HERE = Path(__file__).resolve().parent
CASES_FILE = HERE / "quiet_cases.py"
CASES_START = "# ---- CASES_START"
ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
SPIN = "# spin"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_catalogue = _load("cwm_tracer_test_quiet_catalogue", CASES_FILE)
CASES = [pytest.param(name, where, id=f"{name}-{where}")
         for name, fn in vars(_catalogue).items() if hasattr(fn, "expect") for where in fn.where]


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """{"root": the traced root, "inscope": the cases with the helpers in the root, "outscope": the cases in the
    root importing the helpers from a module outside it}."""
    text = CASES_FILE.read_text()
    helpers, cases = text.split(CASES_START, 1)
    root = tmp_path_factory.mktemp("quiet_root")
    outside = tmp_path_factory.mktemp("quiet_outside")
    (root / "quiet_inscope.py").write_text(text)
    (outside / "cwm_quiet_outside.py").write_text(helpers)
    (root / "quiet_outscope.py").write_text("from cwm_quiet_outside import *  # noqa: F403\n" + CASES_START + cases)
    names = ["cwm_quiet_inscope", "cwm_quiet_outside", "cwm_quiet_outscope"]
    inscope = _load(names[0], root / "quiet_inscope.py")
    _load(names[1], outside / "cwm_quiet_outside.py")     # what quiet_outscope.py imports
    yield {"root": root, "inscope": inscope, "outscope": _load(names[2], root / "quiet_outscope.py")}
    for name in names:
        sys.modules.pop(name, None)


def _trace(fn, config, recorder):
    args, finish = fn.setup() if fn.setup is not None else ((), None)
    try:
        return trace_call(fn, *args, config=config, recorder=recorder)
    finally:
        if finish is not None:
            finish()


def _masked(value):
    return ADDRESS.sub("0x?", repr(value))


def _first_difference(fast, naive):
    """Where the two recorders first disagree, in one line."""
    if len(fast) != len(naive):
        return f"{len(fast)} records from fast, {len(naive)} from naive"
    for k, (a, b) in enumerate(zip(fast, naive)):
        where = f"record {k} ({a['origin']['qualname']})"
        for i, (x, y) in enumerate(zip(a["frames"], b["frames"])):
            if _masked(x) != _masked(y):
                shown = [n for n in (x["locals"] or {}) if (x["locals"] or {}).get(n) != (y["locals"] or {}).get(n)]
                detail = {n: ((x["locals"] or {}).get(n), (y["locals"] or {}).get(n)) for n in shown}
                return (f"{where}, frame {i} ({x['kind']} at line {x['line']}: {x['source'].strip()!r}): "
                        f"fast vs naive {detail or (x, y)}")
        if len(a["frames"]) != len(b["frames"]):
            return f"{where}: {len(a['frames'])} frames from fast, {len(b['frames'])} from naive"
        for key in ("outcome", "stats", "context", "origin"):
            x, y = a[key], b[key]
            if key == "stats":
                x, y = ({k: v for k, v in s.items() if k != "wall_s"} for s in (x, y))
            if _masked(x) != _masked(y):
                return f"{where}: {key} {x!r} vs {y!r}"
    return "records differ outside their frames"


def _resolved(record, hide=("i", "thread")):
    """The record's frames with every ".." replaced by the text it stands for, spin frames and `hide` left out:
    what stays the same however many times the spin loop ran (`i` counts the spins, a started `thread` shows its
    ident). Frames of one scope share a depth (the racy cases call no traced function while spinning); a `call`
    frame starts a new scope."""
    shown, out = {}, []
    for f in record["frames"]:
        depth = f["depth"]
        if f["kind"] == "call":
            shown[depth] = {}
        if f["locals"] is not None:
            before = shown.get(depth, {})
            shown[depth] = {n: (before.get(n) if t == UNCHANGED else t) for n, t in f["locals"].items()}
        if SPIN in f["source"]:
            continue
        state = {n: t for n, t in shown.get(depth, {}).items() if n not in hide}
        out.append(_masked((f["kind"], depth, f["line"], f["value"], state)))
    return out


def _first_resolved_difference(fast, naive):
    for k, (a, b) in enumerate(zip(fast, naive)):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return f"record {k}, frame {i}: fast {x} vs naive {y}"
        if len(a) != len(b):
            return f"record {k}: {len(a)} frames from fast, {len(b)} from naive"
    return f"{len(fast)} records from fast, {len(naive)} from naive"


def _texts(records, local, path):
    """The texts the entry's own frames show for `local`, in order (".." left out)."""
    entry = records[-1]
    return [f["locals"][local] for f in entry["frames"]
            if f["depth"] == 0 and f["path"] == path and f["locals"] and f["locals"].get(local, UNCHANGED) != UNCHANGED]


@pytest.mark.parametrize("name,where", CASES)
def test_quiet_line_shows_the_change(request, programs, compare, backend, name, where):
    fn = getattr(programs[where], name)
    missing = fn.missing() if fn.missing is not None else None
    if missing:
        pytest.skip(f"{name} not run: {missing}")
    if fn.limitation:
        request.applymarker(pytest.mark.xfail(reason=f"known limitation: {fn.limitation}", strict=False))
    config = TraceConfig(root=str(programs["root"]), backend=backend, depth=2, function_episodes=True, **fn.config)
    fast = _trace(fn, config, Recorder)
    naive = _trace(fn, config, NaiveRecorder)
    local, shows = fn.expect
    path = Path(fn.__code__.co_filename).name
    texts = _texts(naive, local, path)
    assert texts and shows not in texts[0] and any(shows in t for t in texts[1:]), (
        f"{name} ({where}, {backend}): the naive trace never shows {local} changing to ...{shows}... "
        f"(it shows {texts}): the case exercises nothing")
    if fn.racy:
        fast_frames, naive_frames = [_resolved(r) for r in fast], [_resolved(r) for r in naive]
        if fast_frames != naive_frames:
            pytest.fail(f"{name} ({where}, {backend}), outside the spin loop: "
                        f"{_first_resolved_difference(fast_frames, naive_frames)}", pytrace=False)
    elif compare(fast) != compare(naive):
        pytest.fail(f"{name} ({where}, {backend}): {_first_difference(fast, naive)}", pytrace=False)
