"""Turning a traced program's values into text without changing what the program does.

`safe_repr(value, budget)` is `repr(value)` cut to `budget` characters with a visible marker. Builtin containers are
walked here rather than by `repr`, so a million-element list costs `budget` characters of work, not a million; the
text is exactly the prefix `repr` would give. A user `__repr__` that raises, recurses without end or runs longer than
`REPR_TIMEOUT_S` is replaced by a placeholder naming the type.

`describe(value, budget)` gives the change detector (tracer/recorder.py) the text plus a proof it can check later
far cheaper than a new repr:
- ATOM: an immutable builtin (int, str, tuple of those...) whose repr never changes while it is the same object;
  holding a reference to it is harmless (no `__del__`, no weakrefs), and identity proves the repr unchanged.
- WITNESS: for a builtin list/tuple/dict/set, the objects its (cut) text was made of: atoms, nested witnesses, and
  objects with a fixed repr. `still_same(v, w)` is an identity scan, mostly in C.
- DEFAULT: an object whose repr is a fixed function of its id and names (object's, a class's, a function's).
- OTHER: a user `__repr__`: only a new repr can tell.
Flat containers (numbers, short strings, short tuples of those) are rendered by C's repr on the slice that the
budget can show.
"""
import _signal
import functools
import os
import re
import signal
import threading
import time
from itertools import chain, islice
from operator import is_

TRUNCATION_MARKER = "...<cut>"
REPR_TIMEOUT_S = 0.5
# After the first alarm, it fires again this often until the repr ends: the interpreter swallows an exception raised
# inside a finalizer or a gc callback ("Exception ignored in ..."), and a one-shot alarm landing there would never
# end the repr.
REPR_RETRY_S = 0.01

ATOMIC_SCALARS = frozenset({int, float, complex, bool, str, bytes, type(None), type(Ellipsis), range})
_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})
# Types whose repr is computed in C without calling back into Python code (for these exact types).
_NO_CALLBACK_REPRS = frozenset({int, float, complex, bool, bytes, type(None), type(Ellipsis), range, bytearray,
                                type, type(len)})


def is_atomic(value, _scalars=ATOMIC_SCALARS):
    """True for immutable builtins whose repr is fixed for the object's lifetime (tuples/frozensets of such too)."""
    t = type(value)
    if t in _scalars:
        return True
    if t is tuple or t is frozenset:
        return len(value) <= 64 and all(type(e) in _scalars or is_atomic(e) for e in value)
    return False


class _ReprTimeout(BaseException):
    """Raised inside a user __repr__ that runs too long. A BaseException, so `except Exception` in it cannot eat it."""


_in_repr = False            # a guarded repr is running: the alarm ends it
_armed = False              # the guard's timer is armed (it may fire just after the repr ended: not the program's)
_program_handler = None     # the traced program's SIGALRM handler while the tracer's is installed


def _on_alarm(signum, frame):
    if _in_repr:
        raise _ReprTimeout()
    if _armed:
        return
    handler = _program_handler  # the program's own alarm: do what it asked for
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGALRM)


def install_alarm():
    """Own SIGALRM for a tracing session (main thread only), so guarding a repr costs two setitimer calls."""
    global _program_handler
    if _ALARM_OK and _get_ident() == _main_ident:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        if previous is not _on_alarm:
            _program_handler = previous


def uninstall_alarm():
    if _ALARM_OK and _get_ident() == _main_ident:
        if signal.getsignal(signal.SIGALRM) is _on_alarm:
            signal.signal(signal.SIGALRM, _program_handler if _program_handler is not None else signal.SIG_DFL)


def placeholder(value, why):
    return f"<{type(value).__name__} object ({why})>"


def cut_text(text, budget):
    """`text` cut to `budget` characters plus TRUNCATION_MARKER, when it is longer."""
    return text[:budget] + TRUNCATION_MARKER if len(text) > budget else text


def user_repr(value, budget):
    """safe_repr's text for an object of a type describe() found a user __repr__ on (kind OTHER, not a container),
    without its dispatch on the type: what the recorder runs again on every snapshot such an object is in."""
    return cut_text(_user_repr(value), budget)


def _user_repr(value):
    """repr() of an arbitrary object, guarded: a placeholder instead of an exception, an endless recursion or a hang."""
    text, why = guarded_repr(value)
    return placeholder(value, why) if text is None else text


def guarded_repr(value):
    """(repr(value), None), or (None, why) when it raised or ran past REPR_TIMEOUT_S.

    The hang guard is SIGALRM (main thread only); a timer the program had running is put back afterwards. This runs
    for every user __repr__ (and, in the naive recorder, every container), so the common case calls C functions
    only: the two setitimer calls that arm and disarm the guard, and no enum conversions or threading lookups.
    """
    global _in_repr, _armed
    try:
        if not (_ALARM_OK and _get_ident() == _main_ident):
            return repr(value), None
        swapped = None
        if _getsignal(_SIGALRM) is not _on_alarm:  # no session, or the program took the signal
            swapped = _set_handler(_SIGALRM, _on_alarm)
        _armed = True
        left, interval = _setitimer(_ITIMER_REAL, REPR_TIMEOUT_S, REPR_RETRY_S)
        started = _perf_counter() if left > 0 else None
        try:
            _in_repr = True
            text = repr(value)
        finally:
            # An alarm raising here (the repr had just ended) leaves this block before its first line has run at
            # most once: the next fire is REPR_RETRY_S away.
            _in_repr = False
            _setitimer(_ITIMER_REAL, 0)
            _armed = False
            if swapped is not None:
                _set_handler(_SIGALRM, swapped)
            if left > 0:  # the program's own timer was running: put back what is left of it
                _setitimer(_ITIMER_REAL, max(left - (_perf_counter() - started), 1e-3), interval)
    except _ReprTimeout:
        return None, "repr timed out"
    except Exception as e:  # RecursionError, anything the user's __repr__ raises
        return None, f"repr raised {type(e).__name__}"
    return text, None


def _note_main_thread():
    """Remember the main thread's ident for guarded_repr's per-call check; run again in a forked child, where the
    thread that forked becomes the main one (threading's own fork hook, registered earlier, has run by then)."""
    global _main_ident
    _main_ident = threading.main_thread().ident


_note_main_thread()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_note_main_thread)
_get_ident, _perf_counter = threading.get_ident, time.perf_counter
_ALARM_OK = hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM")
if _ALARM_OK:
    _SIGALRM, _ITIMER_REAL, _setitimer = int(signal.SIGALRM), signal.ITIMER_REAL, signal.setitimer
# The C functions: signal.signal/getsignal wrap them to turn ints into enums, by way of a caught ValueError
# (microseconds); the raw values they return and take mean the same handlers.
_getsignal = getattr(_signal, "getsignal", signal.getsignal)
_set_handler = getattr(_signal, "signal", signal.signal)


# Per type _prefix_repr handles ('..', b'..', bytearray(b'..')): where its repr's quote stands, how many characters
# close it, and the two quotes as that type holds them.
_QUOTED = {str: (0, 1, "'", '"'), bytes: (1, 1, b"'", b'"'), bytearray: (11, 2, b"'", b'"')}


def _prefix_repr(v, limit):
    """repr of a str, bytes or bytearray, computing only about `limit` characters of it: the repr of a prefix, but
    with the quote the whole value's repr takes (builtin repr picks " only when the value holds ' and no ").
    A megabyte bytearray local (a sieve's) cost every recorder a 4 MB repr on every line."""
    if len(v) <= limit:
        return repr(v)
    head = repr(v[:limit])
    at, closing, single, double = _QUOTED[type(v)]
    whole_quote = '"' if (single in v and double not in v) else "'"
    if head[at] == whole_quote:
        return head[:-closing]  # longer than `limit`: the caller cuts it, so the missing closing quote never shows
    return repr(v)


class _Witness:
    """What a container's (cut) repr was made of: its type, how many elements it had (exactly, or at least), and
    per rendered element the atomic object itself, a nested _Witness, or a _Default.

    all_atoms: whether every element (shown or not) is an atom, once `holds_only_atoms` looked (None before);
    asks: how often the recorder wanted to know (it looks only at containers that last a while)."""
    __slots__ = ("type", "need", "exact", "items", "flat", "all_atoms", "asks")

    def __init__(self, t):
        self.type = t
        self.items = []
        self.flat = True
        self.all_atoms = None
        self.asks = 0


def holds_only_atoms(value, w):
    """True when `value`, the container witness `w` was taken of, holds only scalar atoms (a C scan of every
    element): then no operation on an element can call back into Python code. The answer is kept on `w`."""
    if w.all_atoms is None:
        t = w.type
        if t is dict:
            w.all_atoms = (set(map(type, value)) <= ATOMIC_SCALARS
                           and set(map(type, value.values())) <= ATOMIC_SCALARS)
        else:
            w.all_atoms = set(map(type, value)) <= ATOMIC_SCALARS
    return w.all_atoms


class _Default:
    """An object whose repr is a fixed function of its id and a few names: object's default repr
    (`<mod.Cls object at 0x..>`), a class's (`<class 'mod.Cls'>`), a function's (`<function f at 0x..>`) or a
    builtin's (`<built-in method append of list object at 0x..>`). The same id, type and names: the same repr."""
    __slots__ = ("oid", "tid", "names")

    def __init__(self, v, t, names):
        self.oid, self.tid, self.names = id(v), id(t), names

    def holds(self, v):
        t = type(v)
        return id(v) == self.oid and id(t) == self.tid and _repr_names(v, t) == self.names


_object_repr = object.__repr__
_type_repr = type.__repr__
_function_repr = type(_Default.holds).__repr__
_builtin_repr = type(len).__repr__


def _repr_names(v, t):
    """The names v's repr is made of, when its repr is one of the three fixed ones; None otherwise."""
    r = t.__repr__
    if r is _object_repr:
        return t.__module__, t.__qualname__
    if r is _type_repr:
        return v.__module__, v.__qualname__
    if r is _function_repr:
        return v.__qualname__
    if r is _builtin_repr:   # <built-in function f>, <built-in method f of T object at 0x..>
        owner = v.__self__
        return v.__name__, id(owner), id(type(owner)), type(owner).__name__
    return None


class _Walk:
    """Builds the repr of nested builtin containers left to right and stops once `limit` characters exist.

    With `witness=True` it also records what the text was made of (see `still_same`); `ok` turns False when the
    text depends on something a witness cannot check (a user __repr__, a container inside itself).

    A user __repr__ called from inside the walk may repr a container the walk is in (`"Box(%r)" % (self.items,)`):
    builtin repr would print that one as `[...]`, because it marks each container it is in (Py_ReprEnter). The walk
    marks its containers the same way before it calls one.
    """
    __slots__ = ("parts", "size", "limit", "active", "ok", "open", "top", "walking", "entered")

    def __init__(self, limit, witness=False):
        self.parts = []
        self.size = 0
        self.limit = limit
        self.active = set()
        self.ok = witness
        self.open = []          # the witnesses of the containers being walked, innermost last
        self.top = None
        self.walking = []       # the containers being walked, outermost first...
        self.entered = []       # ...and per container: None, or whether the walk marked it (not marked before)

    def emit(self, text):
        self.parts.append(text)
        self.size += len(text)
        return self.size > self.limit

    def _note(self, entry):
        if self.open:
            w = self.open[-1]
            w.items.append(entry)
            if entry.__class__ is _Witness or entry.__class__ is _Default:
                w.flat = False
        elif self.top is None:
            self.top = entry

    def value(self, v):
        """Append repr(v); True once the limit is passed (the caller stops)."""
        t = type(v)
        if t in _CONTAINERS:
            return self.container(v, t)
        if self.ok:
            if t in ATOMIC_SCALARS:
                self._note(v)
            else:
                names = _repr_names(v, t)
                if names is None:
                    self.ok = False
                else:
                    self._note(_Default(v, t, names))
        if t is str or t is bytes or t is bytearray:
            return self.emit(_prefix_repr(v, self.limit - self.size + 1))
        if t in _NO_CALLBACK_REPRS or t.__repr__ in _C_REPRS:
            try:
                return self.emit(repr(v))
            except Exception as e:  # huge ints (int_max_str_digits)
                return self.emit(placeholder(v, f"repr raised {type(e).__name__}"))
        if self.walking:
            self._mark_walking()
        return self.emit(_user_repr(v))

    def _mark_walking(self):
        enter = _repr_marks()[0]
        for k, container in enumerate(self.walking):
            if self.entered[k] is None:
                self.entered[k] = enter(container) == 0

    def container(self, v, t):
        key = id(v)
        if key in self.active:  # what repr prints for a container inside itself
            self.ok = False
            return self.emit("[...]" if t is list else "{...}" if t is dict else "(...)" if t is tuple else "...")
        if t is list or t is tuple or t is dict:
            flat = _flat_repr(v, t, self.limit - self.size)
            if flat is not None:
                text, items, need, exact = flat
                if self.ok:
                    w = _Witness(t)
                    w.items, w.need, w.exact = items, need, exact
                    self._note(w)
                return self.emit(text)
        w = None
        if self.ok:
            w = _Witness(t)
            self._note(w)
            self.open.append(w)
        index = 0
        stopped = True
        self.active.add(key)
        self.walking.append(v)
        self.entered.append(None)
        try:
            if not v and t is not list and t is not dict:
                stopped = self.emit("()" if t is tuple else f"{t.__name__}()")
                return stopped
            if t is frozenset:
                opening, closing = "frozenset({", "})"
            elif t is set:
                opening, closing = "{", "}"
            else:
                opening, closing = _BRACKETS[t]
            if self.emit(opening):
                return True
            if t is dict:
                for k, item in list(v.items()):
                    if index and self.emit(", "):
                        return True
                    if self.value(k) or self.emit(": ") or self.value(item):
                        return True
                    index += 1
            else:
                for item in (v if t is list or t is tuple else list(v)):
                    if index and self.emit(", "):
                        return True
                    if self.value(item):
                        return True
                    index += 1
                if t is tuple and len(v) == 1 and self.emit(","):
                    return True
            stopped = self.emit(closing)
            return stopped
        finally:
            self.active.discard(key)
            self.walking.pop()
            if self.entered.pop():
                _repr_marks()[1](v)
            if w is not None:
                self.open.pop()
                if stopped:   # cut inside: only the elements shown so far, and that one more exists, matter
                    w.need, w.exact = max(1, index + 1), False
                else:
                    w.need, w.exact = len(v), True
                w.items = tuple(w.items)


@functools.lru_cache(maxsize=None)
def _repr_marks():
    """(Py_ReprEnter, Py_ReprLeave), CPython's, looked up on first use (ctypes costs milliseconds to import)."""
    import ctypes
    enter, leave = ctypes.pythonapi.Py_ReprEnter, ctypes.pythonapi.Py_ReprLeave
    enter.argtypes, enter.restype = [ctypes.py_object], ctypes.c_int
    leave.argtypes, leave.restype = [ctypes.py_object], None
    return enter, leave


_BRACKETS = {list: ("[", "]"), tuple: ("(", ")"), dict: ("{", "}")}
_C_REPRS = frozenset({_object_repr, _type_repr, _function_repr, _builtin_repr})   # reprs that run no Python code
_NUMBERS = frozenset({int, float, bool, type(None), complex})


def _flat_repr(v, t, room):
    """A list/tuple/dict of numbers (or of short strs) rendered by C's repr, as far as `room` characters need:
    (text, witness items, need, exact), or None when the container is not that simple."""
    n = len(v)
    if t is dict:
        k = room // 6 + 2                   # an item is at least "1: 2, "
        head = v if n <= k else dict(islice(v.items(), k))
        parts = (head.keys(), head.values())
    else:
        k = room // 3 + 2                   # an element is at least "1, "
        head = v if n <= k else v[:k]
        parts = (head,)
    for part in parts:
        kinds = set(map(type, part))
        if not kinds <= _NUMBERS and not (kinds <= _FLAT_KINDS and _short_atoms(part, kinds, room)):
            return None
    try:
        text = repr(head)
    except ValueError:   # an int too long to print: the walk makes its placeholder
        return None
    items = tuple(chain.from_iterable(head.items())) if t is dict else tuple(head)
    # Cut short, the text is longer than `room` (k elements need more), so what follows never shows.
    return (text, items, n, True) if n <= k else (text, items, k, False)


_FLAT_KINDS = _NUMBERS | {str, tuple}


def _short_atoms(part, kinds, room):
    """True when every element of `part` is a number, a str, or a short tuple of those (atoms whose repr is C's and
    never changes), and their strs are short enough that C's repr of all of them costs about `room` characters."""
    if tuple not in kinds:
        return sum(map(len, part)) <= 4 * room + 64 if kinds == _STR_ONLY else (
            sum(len(e) for e in part if e.__class__ is str) <= 4 * room + 64)
    total = 0
    for e in part:
        t = e.__class__
        if t is str:
            total += len(e)
        elif t is tuple:
            if len(e) > 16:
                return False
            for x in e:
                tx = x.__class__
                if tx is str:
                    total += len(x)
                elif tx not in _NUMBERS:
                    return False
    return total <= 4 * room + 64


_STR_ONLY = frozenset({str})
_PLAIN = ATOMIC_SCALARS | _CONTAINERS


def _small_with_user_reprs(value, budget, most=64):
    """True when the builtin container `value` holds an object with a user __repr__ among its own elements, and has
    at most `most` elements (nested ones counted) and strs of about `budget` characters in all. The walk's text
    would then prove nothing (OTHER), and one guarded C repr of it all costs about what the walk's `budget`
    characters would, without the walk's per-element guards and recursion marks: the text is the same (the naive
    recorder prints every container so)."""
    if len(value) > most:
        return False
    types = set(map(type, value.values())).union(map(type, value)) if type(value) is dict else set(map(type, value))
    if all(t in _PLAIN or t.__repr__ in _C_REPRS for t in types):    # none at the top: the walk (a witness, perhaps)
        return False
    todo = [value]
    count = chars = 0
    while todo:
        container = todo.pop()
        count += len(container)
        if count > most:        # a container inside itself also ends here
            return False
        for e in chain.from_iterable(container.items()) if type(container) is dict else container:
            t = type(e)
            if t in _CONTAINERS:
                todo.append(e)
            elif t is str or t is bytes or t is bytearray:
                chars += len(e)
    return chars <= 4 * budget + 64


def still_same(value, w):
    """True when `value` would repr to the same text as when witness `w` was taken."""
    t = w.type
    if type(value) is not t:
        return False
    n = len(value)
    if n != w.need if w.exact else n < w.need:
        return False
    items = w.items
    current = chain.from_iterable(value.items()) if t is dict else value
    if w.flat:
        return all(map(is_, current, items))
    for got, want in zip(current, items):
        kind = want.__class__
        if kind is _Witness:
            if want.flat:       # the first case of still_same, inline: a list of flat rows is common
                wt = type(got)
                if wt is not want.type:
                    return False
                n = len(got)
                if n != want.need if want.exact else n < want.need:
                    return False
                if not all(map(is_, chain.from_iterable(got.items()) if wt is dict else got, want.items)):
                    return False
            elif not still_same(got, want):
                return False
        elif kind is _Default:
            if not want.holds(got):
                return False
        elif got is not want:
            return False
    return True


def safe_repr(value, budget):
    """(text, cut): repr(value) cut to `budget` characters plus TRUNCATION_MARKER, or a placeholder."""
    t = type(value)
    if t is int or t is bool or t is type(None) or t is float:
        try:
            text = repr(value)
        except Exception as e:  # int over sys.int_max_str_digits
            return placeholder(value, f"repr raised {type(e).__name__}"), False
    elif t is str or t is bytes or t is bytearray:
        text = _prefix_repr(value, budget + 1)
    elif t in _CONTAINERS:
        walk = _Walk(budget)
        try:
            walk.value(value)
        except RecursionError:
            return placeholder(value, "repr raised RecursionError"), False
        text = "".join(walk.parts)
    elif t in _NO_CALLBACK_REPRS or t.__repr__ in _C_REPRS:
        try:
            text = repr(value)
        except Exception as e:
            return placeholder(value, f"repr raised {type(e).__name__}"), False
    else:
        text = _user_repr(value)
    if len(text) > budget:
        return text[:budget] + TRUNCATION_MARKER, True
    return text, False


ATOM, WITNESS, DEFAULT, OTHER = range(4)


def describe(value, budget):
    """(text, kind, proof): safe_repr's text plus what the change detector needs to know it still holds later.

    ATOM: proof is the value itself (an atomic value: identity proves the repr); WITNESS: a _Witness for
    `still_same`; DEFAULT: a _Default (object's, a class's or a function's fixed repr); OTHER: nothing short of a
    new repr proves it (proof: the type, for an object with a user __repr__, whose text is then `user_repr`'s; None
    for a container).
    """
    t = type(value)
    if t is list or t is dict or t is tuple:
        flat = _flat_repr(value, t, budget)
        if flat is not None:     # the common case, without the walk: what `_Walk.container` makes of it
            text, items, need, exact = flat
            text = cut_text(text, budget)
            if t is tuple and is_atomic(value):
                return text, ATOM, value
            w = _Witness(t)
            w.items, w.need, w.exact = items, need, exact
            return text, WITNESS, w
    if t in _CONTAINERS:
        if _small_with_user_reprs(value, budget):
            text = guarded_repr(value)[0]
            if text is not None:    # else the walk puts a placeholder where an element's repr failed
                return cut_text(text, budget), OTHER, None
        walk = _Walk(budget, witness=True)
        try:
            walk.value(value)
        except RecursionError:
            return placeholder(value, "repr raised RecursionError"), OTHER, None
        text = cut_text("".join(walk.parts), budget)
        if (t is tuple or t is frozenset) and is_atomic(value):
            return text, ATOM, value
        if walk.ok:
            return text, WITNESS, walk.top
        return text, OTHER, None
    text = safe_repr(value, budget)[0]
    if t in ATOMIC_SCALARS:
        return text, ATOM, value
    names = _repr_names(value, t)
    if names is not None:
        return text, DEFAULT, _Default(value, t, names)
    if t is bytearray:      # described again each time, its text bounded (`user_repr` would repr it all)
        return text, OTHER, None
    return text, OTHER, t


# ---- run-to-run noise ---------------------------------------------------------------------------------------------
# What a repr shows that differs between two runs of the same program: memory addresses (object's default repr,
# functions, bound and builtin methods, generators, cells, weakrefs: "at 0x7f..."), a unittest.mock's id (its
# address in decimal: "id='1401...'") and a thread's ident ("started 1401...", "stopped daemon 1401..."). Each is
# a number naming one object; `StableNumbers` replaces it by that object's ordinal in the trace.
_NOISE = re.compile(r"(?<=\bat 0x)([0-9a-fA-F]+)|(?<=\bid=')(\d+)(?=')|(?<=started |stopped )((?:daemon )?)(\d+)")



class StableNumbers:
    """Per-trace ordinals for the run-to-run noise in reprs: the first address (or id, or thread ident) seen in
    the trace becomes 1, the next new one 2, ...; the same number, the same ordinal (an address in hex, a mock's
    decimal id of the same object: one ordinal). Addresses stay hex (`at 0x1`), decimal ids stay decimal.

    Distinct numbers get distinct ordinals, so two texts differ after the rewrite exactly when they did before:
    the ".." diff made on the raw texts still holds on the rewritten ones."""
    __slots__ = ("ordinals", "_sub")

    def __init__(self):
        self.ordinals = {}
        self._sub = functools.partial(_NOISE.sub, self._replace)

    def _replace(self, m):
        hex_, dec, daemon, ident = m.group(1, 2, 3, 4)
        number = int(hex_, 16) if hex_ is not None else int(dec if dec is not None else ident)
        ordinals = self.ordinals
        ordinal = ordinals.get(number)
        if ordinal is None:
            ordinal = ordinals[number] = len(ordinals) + 1
        if hex_ is not None:
            return "%x" % ordinal
        return str(ordinal) if dec is not None else daemon + str(ordinal)

    def text(self, text):
        """`text` with its noise replaced (the same object when there is none). Addresses alone (the common case)
        are found by splitting at " at 0x" (C speed: a regex without a literal prefix tries every position of a
        long text); mock ids and thread idents go through the regex, in text order."""
        if "id='" in text or ", st" in text:
            return self._sub(text)
        if " at 0x" not in text:
            return text
        parts = text.split(" at 0x")
        out = [parts[0]]
        ordinals = self.ordinals
        for part in parts[1:]:
            m = _HEX(part)
            if m is None:
                out.append(" at 0x" + part)
                continue
            end = m.end()
            number = int(part[:end], 16)
            ordinal = ordinals.get(number)
            if ordinal is None:
                ordinal = ordinals[number] = len(ordinals) + 1
            out.append(" at 0x%x%s" % (ordinal, part[end:]))
        return "".join(out)


_HEX = re.compile(r"[0-9a-fA-F]+").match
