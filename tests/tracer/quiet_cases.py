"""Adversarial programs for tests/tracer/test_quiet_lines.py: each case has a line that looks quiet to the change
detector (no store into an object, only pure-looking operations and calls) yet changes a container or an object
that a local of the traced frame shows. The fast recorder must write what the naive one writes.

Two parts, split at the CASES_START marker:
- helpers: classes whose dunders, properties and `__getattr__` have side effects, generators, a dying object, a
  worker thread. test_quiet_lines.py writes them twice: inside the traced root together with the cases (the tracer
  sees their code run as traced frames) and as a module outside the root, which a second copy of the cases
  imports (their code runs unseen: under sys.monitoring, code out of scope sends no event at all).
- cases: `@case(local, shows)` marks a case: `local` is the name whose text must change during the trace and
  `shows` a piece of its new text (the test checks the naive trace really shows it, so a case that exercises
  nothing fails). `where=IN_SCOPE_ONLY` marks a case whose mutation needs no helper's Python code (it runs once);
  `where=OUT_OF_SCOPE_ONLY` one whose helper must run unseen (a signal handler traced or not, depending on where
  the signal lands, would make the records differ from run to run).

This module shadows the builtins `abs` and `range` (see below): neither may be used here for its usual meaning.
"""
import bisect
import ctypes
import gc
import heapq
import operator
import signal
import sys
import threading
import time
import weakref
from collections import defaultdict

BOTH = ("inscope", "outscope")
IN_SCOPE_ONLY = ("inscope",)
OUT_OF_SCOPE_ONLY = ("outscope",)
SPIN_LIMIT = 1_000_000      # bounds every spin loop: a worker that never runs makes a case fail, not hang
KEEP = []                   # keeps drop_cycle's weak references alive (else their callbacks never run)
SHARED = []                 # a module-level list a case also shows as a local


def case(local, shows, *, where=BOTH, racy=False, setup=None, missing=None, limitation=None, **config):
    """Mark a case. racy: it spins on lines marked `# spin` until another thread, a signal or the garbage collector
    acts, so the number of spin frames varies from run to run (the test compares everything else). setup: called
    before tracing, returns (args for the case, a function that cleans up). missing: returns why the case cannot
    run on this platform, or None. limitation: a documented blind spot of the recorder (tracer/recorder.py,
    Recorder._alone): the case runs as an expected failure with this reason. config: TraceConfig fields."""
    def mark(fn):
        fn.expect, fn.where, fn.racy, fn.setup, fn.missing = (local, shows), where, racy, setup, missing
        fn.limitation = limitation
        fn.config = config
        return fn
    return mark


def _note(sink, what):
    if type(sink) is dict:
        sink[what] = sink.get(what, 0) + 1
    else:
        sink.append(what)


class Hook:
    """Every protocol method notes its name in `sink`, a list or dict the traced frame shows. Default repr."""

    def __init__(self, sink):
        self.sink = sink

    def __eq__(self, other):
        _note(self.sink, "eq")
        return True

    def __lt__(self, other):
        _note(self.sink, "lt")
        return False

    def __gt__(self, other):
        _note(self.sink, "gt")
        return False

    def __hash__(self):
        _note(self.sink, "hash")
        return 1

    def __index__(self):
        _note(self.sink, "index")
        return 0

    def __bool__(self):
        _note(self.sink, "bool")
        return True

    def __len__(self):
        _note(self.sink, "len")
        return 1

    def __iter__(self):
        _note(self.sink, "iter")
        return HookIter(self.sink)

    def __contains__(self, item):
        _note(self.sink, "contains")
        return True

    def __getitem__(self, key):
        _note(self.sink, "getitem")
        return 0

    def __format__(self, spec):
        _note(self.sink, "format")
        return "h"

    def __str__(self):
        _note(self.sink, "str")
        return "h"

    def __add__(self, other):
        _note(self.sink, "add")
        return self

    def __radd__(self, other):
        _note(self.sink, "radd")
        return self

    def __iadd__(self, other):
        _note(self.sink, "iadd")
        return self

    def __neg__(self):
        _note(self.sink, "neg")
        return self

    def __round__(self, ndigits=None):
        _note(self.sink, "round")
        return 0

    def __enter__(self):
        _note(self.sink, "enter")
        return self

    def __exit__(self, *exc):
        _note(self.sink, "exit")
        return False

    @property
    def peek(self):
        _note(self.sink, "peek")
        return 0

    def key(self, x):
        _note(self.sink, "key")
        return x


class HookIter:
    def __init__(self, sink):
        self.sink = sink
        self.left = 2

    def __iter__(self):
        return self

    def __next__(self):
        if not self.left:
            raise StopIteration
        self.left -= 1
        _note(self.sink, "next")
        return self.left


class Sized:
    """Truth from __len__ (no __bool__)."""

    def __init__(self, sink):
        self.sink = sink

    def __len__(self):
        _note(self.sink, "len")
        return 1


class Lazy:
    def __init__(self, sink):
        self.sink = sink

    def __getattr__(self, name):
        _note(self.sink, name)
        return 0


class Counted:
    """Shows its own state through a user __repr__, which its __eq__ changes."""

    def __init__(self):
        self.n = 0

    def __eq__(self, other):
        self.n += 1
        return False

    def __repr__(self):
        return f"Counted({self.n})"


class Meta(type):
    def __instancecheck__(cls, obj):
        _note(cls.sink, "instancecheck")
        return True


class Checked(metaclass=Meta):
    sink = None


class Missing(dict):
    def __init__(self, sink):
        super().__init__()
        self.sink = sink

    def __missing__(self, key):
        _note(self.sink, "missing")
        return 0


class LoggingList(list):
    """A list whose `count` (a pure method of list) notes the call."""

    def __init__(self, sink):
        super().__init__((1, 2))
        self.sink = sink

    def count(self, value):
        _note(self.sink, "count")
        return 0


class AppendingList(list):
    """A list whose `append` (a method that changes only the list, for a builtin list) notes the call."""

    def __init__(self, sink):
        super().__init__()
        self.sink = sink

    def append(self, value):
        _note(self.sink, "append")


class Journal:
    """Not a list at all, but its method is called `append`."""

    def __init__(self, sink):
        self.sink = sink

    def append(self, value):
        _note(self.sink, "append")


class Sep(str):
    """A str whose `join` (a pure method of str) notes the call."""

    def join(self, parts):
        _note(self.sink, "join")
        return ""


class Ledger:
    """Not a dict at all, but its method is called `get`."""

    def __init__(self, sink):
        self.sink = sink

    def get(self, key, default=None):
        _note(self.sink, "get")
        return default


class Registering:
    """Subclassing it runs Python code: type(name, (Registering,), {}) notes the new class."""

    sink = None

    def __init_subclass__(cls, **kw):
        _note(Registering.sink, "subclass")


class Dying:
    def __init__(self, sink):
        self.sink = sink

    def __del__(self):
        _note(self.sink, "died")


class DyingError(Exception):
    def __init__(self, sink):
        super().__init__("boom")
        self.sink = sink

    def __del__(self):
        _note(self.sink, "died")


class Plain:
    pass


class Other:
    pass


class Box:
    def __init__(self, items):
        self.items = items


def feeding(sink):
    for i in (0, 1):
        sink.append(i)
        yield i


def strs(sink):
    for s in ("a", "b"):
        sink.append(s)
        yield s


def closing(sink):
    try:
        yield 0
        yield 1
    finally:
        sink.append("closed")


def sneaky_min(xs, *rest, **kw):
    """Bound to the global name `min` in the middle of a case."""
    xs.append("min")
    return 0


# Builtin names shadowed by module globals, as a program may do: a C function that mutates and a Python function,
# both under names of builtins the change detector counts as pure.
abs = list.clear


def range(sink, *rest):
    _note(sink, "range")
    return ()


def drop_cycle(sink):
    """Leave a reference cycle as garbage; when the cycle collector frees it, a weakref callback (C) notes it."""
    a = Plain()
    a.me = a
    KEEP.append(weakref.ref(a, sink.append))


def add_gc_callback(sink):
    """A gc callback of the program's own: it runs at every collection, garbage or not."""
    def note(phase, info):
        if phase == "stop":
            sink.append("gc")
    gc.callbacks.append(note)
    return note


def _worker(flag, sink, linger=False):
    """Wait until the traced code sets flag[0] = 1 (a user __repr__, such as threading.Event's, would keep the
    change detector from trusting any line, so the handshake goes through a plain list), give it time to get into
    its spin loop, then change `sink` and set flag[0] = 2. linger: then stay alive until flag[0] is 3."""
    deadline = time.monotonic() + 5
    while flag[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.0005)
    time.sleep(0.01)
    sink.append("thread")
    flag[0] = 2
    while linger and flag[0] != 3 and time.monotonic() < deadline + 5:
        time.sleep(0.0005)


def start_worker(flag, sink, linger=False):
    """Start _worker on a new thread; returns the function that joins it (its repr is the same in every run)."""
    thread = threading.Thread(target=_worker, args=(flag, sink, linger), daemon=True)
    thread.start()

    def finish():
        flag[0] = 3
        thread.join(10)

    return finish


def profile_c_calls(sink):
    """Install a profile function that notes each call of the builtin len in `sink` (profile functions run with
    tracing off, and under sys.monitoring out of scope); returns the function that removes it."""
    def profiler(frame, event, arg):
        if event == "c_call" and arg is len:
            sink.append("c_call")

    sys.setprofile(profiler)

    def finish():
        sys.setprofile(None)

    return finish


def start_cpu_timer(sink):
    """After 5 ms of CPU time, a SIGVTALRM handler (Python) appends to `sink`; returns the function that puts the
    previous handler back."""
    def handler(signum, frame):
        sink.append("signal")

    previous = signal.signal(signal.SIGVTALRM, handler)
    signal.setitimer(signal.ITIMER_VIRTUAL, 0.005)

    def finish():
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)

    return finish


def start_worker_before_tracing():
    """Setup of a case: the worker thread runs already when tracing starts, and still runs when it ends."""
    log, flag = [], [0]
    return (log, flag), start_worker(flag, log, linger=True)


def _libc():
    """libc with pthread_create, or None (not Linux/glibc-like)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.pthread_create, libc.pthread_join
    except (OSError, AttributeError):
        return None
    return libc


def no_native_threads():
    return None if _libc() is not None else "no pthread_create through ctypes (Linux only)"


def no_cpu_timer():
    return None if hasattr(signal, "SIGVTALRM") and hasattr(signal, "setitimer") else "no SIGVTALRM/setitimer"


def start_native_worker(flag, sink):
    """Start _worker on a thread made by pthread_create, which neither threading nor _thread counts; returns the
    function that joins it."""
    libc = _libc()
    callback = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(lambda _: _worker(flag, sink))
    handle = ctypes.c_ulong()
    if libc.pthread_create(ctypes.byref(handle), None, callback, None) != 0:
        raise OSError("pthread_create failed")

    def finish():
        flag[0] = 3
        libc.pthread_join(handle, None)
        callback    # the C callback must outlive the thread

    return finish


# ---- CASES_START ------------------------------------------------------------------------------------------------
# Python dunders, properties, __getattr__: the helpers' code runs on the quiet-looking line.
@case("log", "'eq'")
def dunder_eq():
    log = []
    h = Hook(log)
    r = h == 1
    done = True


@case("log", "'eq'")
def dunder_ne_falls_back_to_eq():
    log = []
    h = Hook(log)
    r = h != 1
    done = True


@case("log", "'lt'")
def dunder_lt():
    log = []
    h = Hook(log)
    r = h < 1
    done = True


@case("log", "'gt'")
def dunder_gt_reflected():
    log = []
    h = Hook(log)
    r = 1 < h
    done = True


@case("log", "'eq'")
def dunder_eq_in_tuple_compare():
    log = []
    h = Hook(log)
    r = (1, h) == (1, 2)
    done = True


@case("log", "'hash'")
def dunder_hash_set_membership():
    log = []
    h = Hook(log)
    s = {1}
    r = h in s
    done = True


@case("seen", "'hash'")
def dunder_hash_dict_subscript():
    seen = {}
    h = Hook(seen)
    d = {1: "one"}
    r = d[h]
    done = True


@case("log", "'hash'")
def dunder_hash_dict_get():
    log = []
    h = Hook(log)
    d = {1: "one"}
    r = d.get(h)
    done = True


@case("log", "'hash'")
def dunder_hash_set_display():
    log = []
    h = Hook(log)
    s = {h}
    done = True


@case("log", "'index'")
def dunder_index_subscript():
    log = []
    h = Hook(log)
    xs = [5, 6]
    r = xs[h]
    done = True


@case("log", "'index'")
def dunder_index_slice():
    log = []
    h = Hook(log)
    xs = [5, 6]
    r = xs[h:]
    done = True


@case("log", "'index'")
def dunder_index_via_int():
    log = []
    h = Hook(log)
    r = int(h)
    done = True


@case("log", "'bool'")
def dunder_bool_if():
    log = []
    h = Hook(log)
    r = 0
    if h:
        r = 1
    done = True


@case("log", "'bool'")
def dunder_bool_not():
    log = []
    h = Hook(log)
    r = not h
    done = True


@case("log", "'len'")
def dunder_len():
    log = []
    h = Hook(log)
    n = len(h)
    done = True


@case("log", "'len'")
def dunder_len_as_truth():
    log = []
    sz = Sized(log)
    r = 0
    if sz:
        r = 1
    done = True


@case("log", "'next'")
def dunder_iter_next_for():
    log = []
    h = Hook(log)
    v = None
    for v in h:
        w = v
    done = True


@case("log", "'next'")
def dunder_next_on_shown_iterator():
    log = []
    it = iter(Hook(log))
    v = None
    for v in it:
        w = v
    done = True


@case("log", "'next'")
def dunder_iter_unpack():
    log = []
    h = Hook(log)
    a, b = h
    done = True


@case("log", "'next'")
def dunder_iter_star():
    log = []
    h = Hook(log)
    r = [*h]
    done = True


@case("log", "'contains'")
def dunder_contains():
    log = []
    h = Hook(log)
    r = 1 in h
    done = True


@case("seen", "'getitem'")
def dunder_getitem():
    seen = {}
    h = Hook(seen)
    r = h[0]
    done = True


@case("log", "'format'")
def dunder_format_fstring():
    log = []
    h = Hook(log)
    s = f"{h}"
    done = True


@case("log", "'format'")
def dunder_format_spec():
    log = []
    h = Hook(log)
    s = f"{h:>3}"
    done = True


@case("log", "'str'")
def dunder_str_conversion():
    log = []
    h = Hook(log)
    s = f"{h!s}"
    done = True


@case("log", "'format'")
def dunder_format_via_str_method():
    log = []
    h = Hook(log)
    fmt = "{}"
    s = fmt.format(h)
    done = True


@case("log", "'add'")
def dunder_add():
    log = []
    h = Hook(log)
    r = h + 1
    done = True


@case("log", "'radd'")
def dunder_radd():
    log = []
    h = Hook(log)
    r = 1 + h
    done = True


@case("log", "'iadd'")
def dunder_iadd_on_a_local():
    log = []
    h = Hook(log)
    h += 1
    done = True


@case("log", "'neg'")
def dunder_neg():
    log = []
    h = Hook(log)
    r = -h
    done = True


@case("log", "'round'")
def dunder_round():
    log = []
    h = Hook(log)
    r = round(h)
    done = True


@case("log", "'exit'")
def dunder_with():
    log = []
    h = Hook(log)
    with h:
        r = 0
    done = True


@case("log", "'peek'")
def property_with_side_effect():
    log = []
    h = Hook(log)
    r = h.peek
    done = True


@case("log", "'index'")
def getattr_with_side_effect():
    log = []
    lz = Lazy(log)
    r = lz.index
    done = True


@case("log", "'instancecheck'")
def dunder_instancecheck():
    log = []
    Checked.sink = log
    r = isinstance(1, Checked)
    done = True


@case("log", "'subclass'")
def init_subclass_via_type():
    log = []
    Registering.sink = log
    bases = (Registering,)
    k = type("K", bases, {})
    done = True


@case("log", "'missing'")
def dict_subclass_missing():
    log = []
    m = Missing(log)
    r = m["k"]
    done = True


@case("log", "'count'")
def list_subclass_pure_named_method():
    log = []
    ll = LoggingList(log)
    r = ll.count(1)
    done = True


@case("log", "'join'")
def str_subclass_pure_named_method():
    log = []
    sep = Sep("-")
    sep.sink = log
    r = sep.join(("a", "b"))
    done = True


@case("log", "'get'")
def lookalike_get_method():
    log = []
    led = Ledger(log)
    r = led.get("k")
    done = True


@case("log", "'eq'")
def list_index_calls_eq():
    log = []
    h = Hook(log)
    xs = [1, 2]
    r = xs.index(h)
    done = True


@case("log", "'eq'")
def list_count_calls_eq():
    log = []
    h = Hook(log)
    xs = [1, 2]
    r = xs.count(h)
    done = True


@case("log", "'eq'")
def list_contains_calls_eq():
    log = []
    h = Hook(log)
    xs = [1, 2]
    r = h in xs
    done = True


@case("log", "'eq'")
def list_contains_calls_eq_of_an_element():
    log = []
    xs = [Hook(log)]
    r = 1 in xs
    done = True


@case("c", "Counted(1)")
def user_repr_state_changed_by_eq():
    c = Counted()
    r = c == 1
    done = True


# A list longer than its shown text, once known to hold only atoms: a line that mutates it may put an object with
# dunders where no text shows it, and a quiet line may reach that object later.
@case("log", "'eq'")
def unshown_element_replaced_by_hook():
    log, seen = [], []
    xs = [0] * 100
    for k in (1, 2, 3, 4, 5, 99):
        xs[k] = Hook(log) if k == 99 else 0
        seen.append(k)
        t = xs[99] == 0
    done = True


@case("log", "'eq'")
def unshown_element_replaced_by_hook_between_quiet_lines():
    log = []
    xs = [0] * 100
    for k in (1, 2, 3, 4, 5, 99):
        t = xs[99] == 0
        if k == 5:
            xs[99] = Hook(log)
    done = True


@case("log", "'eq'")
def unshown_element_differs_in_a_list_with_the_same_text():
    log = []
    xs = [0] * 100
    ys = [0] * 99 + [Hook(log)]
    for k in (1, 2, 3, 4, 5, 6):
        t = xs[99] == 0
        if k == 5:
            xs = ys
    done = True


# Builtins that call back into Python.
@case("log", "'key'")
def sorted_with_key():
    log = []
    h = Hook(log)
    xs = [2, 1]
    r = sorted(xs, key=h.key)
    done = True


@case("log", "'key'")
def min_with_key():
    log = []
    h = Hook(log)
    xs = [2, 1]
    r = min(xs, key=h.key)
    done = True


@case("log", "'key'")
def max_with_key():
    log = []
    h = Hook(log)
    xs = [2, 1]
    r = max(xs, key=h.key)
    done = True


@case("log", "'gt'")
def min_compares_objects():
    log = []
    h = Hook(log)
    r = min(h, 1)
    done = True


@case("log", "'lt'")
def sorted_compares_objects():
    log = []
    objs = [Hook(log), Hook(log)]
    r = sorted(objs)
    done = True


@case("log", "'key'")
def map_consumed_by_list():
    log = []
    h = Hook(log)
    xs = [1, 2]
    r = list(map(h.key, xs))
    done = True


@case("log", "'key'")
def filter_consumed_by_tuple():
    log = []
    h = Hook(log)
    xs = [1, 2]
    r = tuple(filter(h.key, xs))
    done = True


@case("log", "'a', 'b'")
def str_join_over_a_generator():
    log = []
    g = strs(log)
    sep = "-"
    s = sep.join(g)
    done = True


@case("log", "'radd'")
def sum_over_objects():
    log = []
    objs = [Hook(log), Hook(log)]
    r = sum(objs)
    done = True


@case("log", "'bool'")
def any_over_objects():
    log = []
    objs = [Hook(log)]
    r = any(objs)
    done = True


@case("log", "'hash'")
def hash_builtin():
    log = []
    h = Hook(log)
    r = hash(h)
    done = True


@case("log", "'str'")
def str_builtin():
    log = []
    h = Hook(log)
    r = str(h)
    done = True


# Lines that change a container a local holds (confined lines): the change shows through every name and container
# holding it, and nothing else of the program's runs.
@case("ys", "1")
def append_seen_through_an_alias():
    xs = []
    ys = xs
    xs.append(1)
    done = True


@case("outer", "1")
def store_seen_through_a_list_holding_it():
    xs = [0]
    outer = [xs]
    xs[0] = 1
    done = True


@case("t", "5")
def append_seen_through_a_tuple_holding_it():
    xs = []
    t = (xs, 0)
    xs.append(5)
    done = True


@case("a", "1")
def append_to_one_of_two_lists_chosen_on_the_line():
    a, b = [], []
    k = 1
    (a if k else b).append(1)
    done = True


@case("log", "'append'")
def append_of_a_list_subclass():
    log = []
    xs = AppendingList(log)
    xs.append(1)
    done = True


@case("log", "'append'")
def append_method_of_an_object():
    log = []
    j = Journal(log)
    j.append(1)
    done = True


@case("log", "'died'")
def store_drops_an_unshown_element_with_del():
    log = []
    xs = [0] * 100
    for k in (1, 2, 3, 4):
        xs[k] = 0
    xs[99] = Dying(log)
    xs[99] = 0
    done = True


@case("log", "'eq'")
def remove_compares_an_unshown_element():
    log = []
    xs = [1] * 100
    for k in (1, 2, 3, 4):
        if k == 4:
            xs[99] = Hook(log)
        xs.append(2)
        xs.remove(2)
    done = True


@case("log", "'eq'")
def remove_after_a_line_changed_shown_and_unshown_elements():
    log = []
    xs = [1] * 100
    for k in (0, 1, 2, 3, 4):
        if k == 4:
            xs[0], xs[99] = 5, Hook(log)
        xs.append(3)
        xs.remove(3)
    done = True


@case("out", "6")
def confined_line_that_also_unbinds_a_name():
    out = []
    for k in (1, 2, 3, 4, 5, 6):
        a = k
        xs = [0] * 100
        xs.append(k); del a     # the names shown change while the recorder asks what xs holds
        out.append(k)
    done = True


# A `for` line advances the iterator it made on its first pass, not what the name it loads holds now.
@case("log", "'next', 'next'")
def for_over_a_name_the_loop_rebinds():
    log = []
    it = HookIter(log)
    for v in it:
        it = [0]
    done = True


@case("log", "'next', 'next'")
def for_over_a_cell_a_closure_rebinds():
    log = []
    it = HookIter(log)

    def rebind():
        nonlocal it
        it = [0]
    for v in it:
        rebind()
    done = True


# Generators whose body changes a list the consumer shows.
@case("log", "[0, 1]")
def generator_for_loop():
    log = []
    g = feeding(log)
    v = None
    for v in g:
        w = v
    done = True


@case("log", "[0]")
def generator_next():
    log = []
    g = feeding(log)
    v = next(g)
    done = True


@case("log", "'closed'")
def generator_closed_by_rebinding():
    log = []
    g = closing(log)
    v = next(g)
    g = None
    done = True


@case("log", "'closed'")
def generator_closed_by_break():
    log = []
    for v in closing(log):
        break   # pops the loop's iterator: the generator closes, its `finally` runs
    done = True


# __del__ and finalizers when a rebinding drops the last reference.
@case("log", "'died'")
def del_on_rebinding():
    log = []
    d = Dying(log)
    d = 0
    done = True


@case("log", "'died'")
def del_on_delete():
    log = []
    d = Dying(log)
    del d
    done = True


@case("log", "'died'")
def del_of_tuple_element_on_rebinding():
    log = []
    t = (Dying(log), 1)
    t = 0
    done = True


@case("log", "'died'")
def del_when_except_as_name_is_cleared():
    log = []
    try:
        raise DyingError(log)
    except DyingError as e:
        r = 0
    done = True


@case("log", "'fin'", where=IN_SCOPE_ONLY)
def weakref_finalize_on_rebinding():
    log = []
    o = Plain()
    fin = weakref.finalize(o, log.append, "fin")
    o = None
    done = True


@case("log", "dead", where=IN_SCOPE_ONLY)
def weakref_callback_on_rebinding():
    log = []
    o = Plain()
    ref = weakref.ref(o, log.append)
    o = None
    done = True


@case("log", "'c_call'")
def profile_function_sees_a_pure_builtin_call():
    log = []
    finish = profile_c_calls(log)
    n = len(log)
    done = True
    finish()


# Builtin names rebound by the module (see the helpers) or in the middle of the case.
@case("xs", "[]", where=IN_SCOPE_ONLY)
def shadowed_abs_is_list_clear():
    xs = [1, 2]
    n = abs(xs)
    done = True


@case("log", "'range'")
def shadowed_range_is_python():
    log = []
    r = range(log)
    done = True


@case("xs", "[]", where=IN_SCOPE_ONLY)
def len_rebound_midway_to_list_clear():
    xs = [1, 2]
    globals()["len"] = list.clear
    try:
        n = len(xs)
        done = True
    finally:
        del globals()["len"]


@case("xs", "'min'")
def min_rebound_midway_to_python():
    xs = [1, 2]
    globals()["min"] = sneaky_min
    try:
        r = min(xs)
        done = True
    finally:
        del globals()["min"]


@case("xs", "3", where=IN_SCOPE_ONLY)
def local_named_len():
    xs = [1, 2]
    len = xs.append
    n = len(3)
    done = True


# C functions and methods that mutate, reached in ways a name check may miss.
@case("h", "[1, 5, 3]", where=IN_SCOPE_ONLY)
def heapq_heappush():
    h = [3, 5]
    heapq.heappush(h, 1)
    done = True


@case("xs", "[1, 2, 3]", where=IN_SCOPE_ONLY)
def bisect_insort():
    xs = [1, 3]
    bisect.insort(xs, 2)
    done = True


@case("d", "'k': 1", where=IN_SCOPE_ONLY)
def operator_setitem():
    d = {}
    operator.setitem(d, "k", 1)
    done = True


@case("xs", "[1, 3]", where=IN_SCOPE_ONLY)
def sort_through_an_alias():
    xs = [3, 1]
    srt = xs.sort
    srt()
    done = True


@case("xs", "7]", where=IN_SCOPE_ONLY)
def append_through_the_type():
    xs = [1]
    list.append(xs, 7)
    done = True


@case("xs", "[2, 1]", where=IN_SCOPE_ONLY)
def reverse_through_getattr():
    xs = [1, 2]
    getattr(xs, "reverse")()
    done = True


@case("d", "'k': 1", where=IN_SCOPE_ONLY)
def dict_setitem_slot_wrapper():
    d = {}
    dict.__setitem__(d, "k", 1)
    done = True


@case("xs", "[1, 3]", where=IN_SCOPE_ONLY)
def append_on_an_attribute_receiver():
    xs = [1]
    box = Box(xs)
    box.items.append(3)
    done = True


@case("rows", "[[0, 1]]", where=IN_SCOPE_ONLY)
def append_on_a_subscript_receiver():
    rows = [[0]]
    rows[0].append(1)
    done = True


@case("xs", "'g'", where=IN_SCOPE_ONLY)
def append_on_a_global_receiver():
    SHARED.clear()
    xs = SHARED
    SHARED.append("g")
    done = True


@case("d", "'k': []", where=IN_SCOPE_ONLY)
def dict_setdefault():
    d = {}
    v = d.setdefault("k", [])
    done = True


@case("d", "{}", where=IN_SCOPE_ONLY)
def dict_pop():
    d = {"k": 1}
    v = d.pop("k")
    done = True


@case("d", "{}", where=IN_SCOPE_ONLY)
def dict_popitem():
    d = {"k": 1}
    v = d.popitem()
    done = True


@case("d", "'n': 2", where=IN_SCOPE_ONLY)
def dict_update():
    d = {"k": 1}
    d.update(n=2)
    done = True


@case("xs", "[1, 2]", where=IN_SCOPE_ONLY)
def list_extend():
    xs = [1]
    xs.extend((2,))
    done = True


@case("xs", "[0, 1]", where=IN_SCOPE_ONLY)
def list_insert():
    xs = [1]
    xs.insert(0, 0)
    done = True


@case("xs", "[2]", where=IN_SCOPE_ONLY)
def list_remove():
    xs = [1, 2]
    xs.remove(1)
    done = True


@case("xs", "[1]", where=IN_SCOPE_ONLY)
def list_pop():
    xs = [1, 2]
    v = xs.pop()
    done = True


@case("s", "{1, 2}", where=IN_SCOPE_ONLY)
def set_add():
    s = {1}
    s.add(2)
    done = True


@case("xs", "[0, 1]", where=IN_SCOPE_ONLY)
def iadd_list_through_an_alias():
    xs = [0]
    ys = xs
    ys += [1]
    done = True


@case("t", "[0, 1]", where=IN_SCOPE_ONLY)
def iadd_list_seen_in_a_tuple():
    xs = [0]
    t = (xs, 1)
    xs += [1]
    done = True


@case("xs", "[1, 1]", where=IN_SCOPE_ONLY)
def imul_list():
    xs = [1]
    xs *= 2
    done = True


@case("s", "{1, 2}", where=IN_SCOPE_ONLY)
def ior_set():
    s = {1}
    s |= {2}
    done = True


@case("d", "'k': 1", where=IN_SCOPE_ONLY)
def ior_dict():
    d = {}
    d |= {"k": 1}
    done = True


@case("xs", "[1, 3]", where=IN_SCOPE_ONLY)
def slice_assignment():
    xs = [1, 2, 3]
    xs[1:2] = []
    done = True


@case("xs", "[2]", where=IN_SCOPE_ONLY)
def del_subscript():
    xs = [1, 2]
    del xs[0]
    done = True


@case("xs", "[1, 1]", where=IN_SCOPE_ONLY)
def operator_iadd():
    xs = [1]
    operator.iadd(xs, [1])
    done = True


@case("total", "3", where=IN_SCOPE_ONLY)
def walrus_in_a_comprehension():
    total = 0
    r = [total := total + x for x in (1, 2)]
    done = True


@case("acc", "[1, 2]", where=IN_SCOPE_ONLY)
def walrus_rebinds_a_list_in_a_comprehension():
    acc = []
    r = [acc := acc + [x] for x in (1, 2)]
    done = True


@case("v", "7", where=IN_SCOPE_ONLY)
def next_on_a_list_iterator():
    xs = [7, 8]
    it = iter(xs)
    v = None
    v = next(it)
    done = True


@case("o", "Other object", where=IN_SCOPE_ONLY)
def setattr_class_swap():
    o = Plain()
    setattr(o, "__class__", Other)
    done = True


@case("o", "Other object", where=IN_SCOPE_ONLY)
def store_class_swap():
    o = Plain()
    o.__class__ = Other
    done = True


@case("g", "<function renamed at", where=IN_SCOPE_ONLY)
def setattr_function_qualname():
    def g():
        pass
    setattr(g, "__qualname__", "renamed")
    done = True


@case("k", "Renamed'>", where=IN_SCOPE_ONLY)
def setattr_class_qualname():
    k = type("K", (), {})
    setattr(k, "__qualname__", "Renamed")
    done = True


# C callables reached from a quiet line with no Python code running at all: an iterator over a bound C method,
# callables held in a container, and dunder slots filled with bound C methods of the shown list (a builtin method is
# no descriptor: the slot calls it with the operands only).
@case("log", "'a'", where=IN_SCOPE_ONLY)
def next_on_a_map_over_a_c_method():
    log = []
    it = map(log.append, "ab")
    v = 0
    v = next(it)
    done = True


@case("log", "'a', 'b'", where=IN_SCOPE_ONLY)
def for_over_a_map_over_a_c_method():
    log = []
    it = map(log.append, "ab")
    v = 0
    for v in it:
        w = v
    done = True


@case("stack", "[0]", where=IN_SCOPE_ONLY)
def for_over_a_callable_iterator():
    stack = [0, 2, 1]
    it = iter(stack.pop, 2)
    v = 0
    for v in it:
        w = v
    done = True


@case("log", "'a'", where=IN_SCOPE_ONLY)
def next_on_an_iterator_held_in_a_list():
    log = []
    its = [map(log.append, "ab")]
    v = 0
    v = next(its[0])
    done = True


@case("log", "'a'", where=IN_SCOPE_ONLY)
def max_over_map_of_a_callable_held_in_a_list():
    log = []
    fns = [log.append]
    r = 0
    r = max(map(fns[0], "a"))
    done = True


@case("log", "[5]", where=IN_SCOPE_ONLY)
def min_with_a_key_held_in_a_list():
    log = []
    fns = [log.append]
    one = [5]
    r = min(one, key=fns[0])
    done = True


@case("log", "[1]", where=IN_SCOPE_ONLY)
def c_slot_eq():
    log = []
    s = type("S", (), {"__eq__": log.append})()
    r = s == 1
    done = True


@case("log", "[2]", where=IN_SCOPE_ONLY)
def c_slot_lt():
    log = []
    s = type("S", (), {"__lt__": log.append})()
    r = s < 2
    done = True


@case("log", "[3]", where=IN_SCOPE_ONLY)
def c_slot_contains():
    log = []
    s = type("S", (), {"__contains__": log.append})()
    r = 3 in s
    done = True


@case("log", "[4]", where=IN_SCOPE_ONLY)
def c_slot_add():
    log = []
    s = type("S", (), {"__add__": log.append})()
    r = s + 4
    done = True


@case("log", "[2]", where=IN_SCOPE_ONLY)
def c_slot_getitem():
    log = [1, 2]
    s = type("S", (), {"__getitem__": log.pop})()
    r = s[0]
    done = True


@case("ints", "[5]", where=IN_SCOPE_ONLY)
def c_slot_index():
    ints = [5, 1]
    s = type("S", (), {"__index__": ints.pop})()
    xs = [0, 1]
    r = xs[s]
    done = True


@case("ints", "[5]", where=IN_SCOPE_ONLY)
def c_slot_hash():
    ints = [5, 7]
    s = type("S", (), {"__hash__": ints.pop})()
    d = {1: 1}
    r = s in d
    done = True


@case("flags", "[False]", where=IN_SCOPE_ONLY)
def c_slot_bool():
    flags = [False, True]
    s = type("S", (), {"__bool__": flags.pop})()
    r = 0
    if s:
        r = 1
    done = True


@case("sizes", "[1]", where=IN_SCOPE_ONLY)
def c_slot_len_as_truth():
    sizes = [1, 2]
    s = type("S", (), {"__len__": sizes.pop})()
    r = 0
    if s:
        r = 1
    done = True


@case("texts", "{}", where=IN_SCOPE_ONLY)
def c_slot_format():
    texts = {"": "x"}
    s = type("S", (), {"__format__": texts.pop})()
    r = f"{s}"
    done = True


@case("its", "[]", where=IN_SCOPE_ONLY)
def c_slot_iter_unpack():
    its = [iter((1, 2))]
    s = type("S", (), {"__iter__": its.pop})()
    a, b = s
    done = True


@case("log", "['count']", where=IN_SCOPE_ONLY)
def c_slot_getattr_under_a_pure_method_name():
    log = []
    s = type("S", (), {"__getattr__": log.append})()
    r = s.count
    done = True


@case("log", "S object", where=IN_SCOPE_ONLY)
def c_property_under_a_pure_method_name():
    log = []
    s = type("S", (), {"get": property(log.append)})()
    r = s.get
    done = True


@case("log", "['k']", where=IN_SCOPE_ONLY)
def c_method_under_a_pure_name_on_an_element():
    log = []
    o = Plain()
    o.get = log.append
    rows = [o]
    r = rows[0].get("k")
    done = True


@case("names", "'x'", where=IN_SCOPE_ONLY)
def c_set_name_during_a_type_call():
    names = {}
    ns = {"x": type("Named", (), {"__set_name__": names.__setitem__})()}
    k = type("K", (), ns)
    done = True


@case("log", "[1]", where=IN_SCOPE_ONLY)
def c_instancecheck_via_a_class_in_a_tuple():
    log = []
    ks = (type("M", (type,), {"__instancecheck__": log.append})("K", (), {}),)
    r = isinstance(1, ks)
    done = True


@case("log", "S object", where=IN_SCOPE_ONLY)
def c_slot_lt_in_sorted_over_a_list():
    log = []
    S = type("S", (), {"__lt__": log.append})
    objs = [S(), S()]
    r = sorted(objs)
    done = True


@case("log", "[]", where=IN_SCOPE_ONLY)
def defaultdict_factory_pops_a_shown_list():
    log = ["x"]
    box = Box(defaultdict(log.pop))
    r = box.items["k"]
    done = True


# Other threads and the cycle collector act while the traced frame runs quiet lines.
@case("log", "'thread'", where=IN_SCOPE_ONLY, racy=True, max_frames=10**7, max_bytes=10**9)
def thread_started_in_the_case():
    log, flag = [], [0]
    finish = start_worker(flag, log)
    flag[0] = 1
    i = 0
    while flag[0] == 1 and i < SPIN_LIMIT:  # spin
        i = i + 1  # spin
    done = True
    finish()


@case("log", "'thread'", where=IN_SCOPE_ONLY, racy=True, setup=start_worker_before_tracing, max_frames=10**7,
      max_bytes=10**9)
def thread_started_before_tracing(log, flag):
    flag[0] = 1
    i = 0
    while flag[0] == 1 and i < SPIN_LIMIT:  # spin
        i = i + 1  # spin
    done = True


@case("log", "'thread'", where=IN_SCOPE_ONLY, racy=True, missing=no_native_threads, max_frames=10**7, max_bytes=10**9,
      limitation="a thread started by native code is invisible to _thread._count()")
def native_thread_started_in_the_case():
    log, flag = [], [0]
    finish = start_native_worker(flag, log)
    flag[0] = 1
    i = 0
    while flag[0] == 1 and i < SPIN_LIMIT:  # spin
        i = i + 1  # spin
    done = True
    finish()


@case("log", "dead", where=IN_SCOPE_ONLY, racy=True, max_frames=10**7, max_bytes=10**9)
def cycle_collected_during_quiet_lines():
    log = []
    drop_cycle(log)
    i = 0
    while log == [] and i < SPIN_LIMIT:  # spin
        i = i + 1  # spin
    done = True


@case("log", "'gc'", where=IN_SCOPE_ONLY, racy=True, max_frames=10**7, max_bytes=10**9)
def gc_callback_during_quiet_lines():
    log = []
    note = add_gc_callback(log)
    i = 0
    while log == [] and i < SPIN_LIMIT:  # spin
        i = i + 1  # spin
    done = True
    gc.callbacks.remove(note)


@case("log", "'signal'", where=OUT_OF_SCOPE_ONLY, racy=True, missing=no_cpu_timer, max_frames=10**7, max_bytes=10**9,
      limitation="a Python signal handler can run inside the tracer's own callback, where no event reports it")
def signal_handler_during_quiet_lines():
    log = []
    finish = start_cpu_timer(log)
    i = 0
    while log == [] and i < SPIN_LIMIT:  # spin
        i = i + 1  # spin
    done = True
    finish()
