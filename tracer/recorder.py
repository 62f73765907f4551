"""From normalised events to trace records (DESIGN.md §1-2): scopes, episodes, the `".."` diff and the budgets.

A backend (tracer/backends.py) turns interpreter events into four calls: `enter` (a scope starts or resumes),
`line`, `exception` and `leave` (return, yield or unwind); this module never touches `sys`'s hooks.

Scope: one activation of a code object (a generator's or coroutine's activation lasts across its suspensions).
Episode: one trace being recorded: the entry's, or one per call of a project function (function_episodes). A scope
belongs to every open episode whose root is at most `depth` scopes up its chain; its frames go to each of them, and
an episode ends when its root scope is first left (for a generator root: its first yield).

Frames, identical from both backends:
- `call`: a scope starts, or a generator/coroutine resumes (also by throw()); locals at that moment, the def line.
- `line`: before a line runs (again on each loop iteration, even a one-line loop).
- `return`: on return, and on each yield/await suspension (value: what was returned or yielded).
- `exception`: an exception is raised in the line or arrives there from a callee, caught or not; also the
  StopIteration that 3.12+ reports when a for loop or `yield from` exhausts a generator (settrace reports it too).
  Caught in the same scope: the `exception` frame, then the handler's lines. Not caught: it is the scope's last
  frame (an unwound scope has no `return` frame) and an episode rooted there has outcome "raised".
- Comprehensions: 3.12+ inlines list/dict/set comprehensions (PEP 709), so their iterations are `line` frames of
  the enclosing scope, the loop variable among its locals; before 3.12, and generator expressions always, they are
  scopes of their own one level deeper. Compiler-hidden locals (".0") and pytest's assertion temporaries
  ("@py_assert1") are left out: neither is a name the program wrote.

The diff: a local whose repr equals the one shown in the previous frame of the same scope *in the same episode* is
written "..". Re-serialising every local on every line is the naive way (tracer/naive.py, the test oracle);
instead each scope remembers, per local, the text it showed and a cheap proof that it still holds:
- an atomic value (int, str, tuple of those, ...) that is still the same object has the same repr;
- a builtin container whose shown elements are still the same objects has the same repr (`values.still_same`);
- an object with object's default repr, still the same id and type names, has the same repr;
- after a quiet line nothing it did not rebind can have changed, so not even those proofs need checking, and only
  the locals it stores are looked at: its bytecode stores into no object and calls only pure builtins
  (`code_facts`), it worked on builtin values only (atoms, containers of atoms: no dunder method of the program's
  can run), the values it overwrote were atomic (no `__del__`), and no code that no line shows ran meanwhile:
  another thread, a finalizer run by a garbage collection, a profile function (`_verdict`, `gc_last`);
- after a confined line (a quiet line that also stores into, or calls a method of, a local's list, dict or set of
  atoms: `xs[i] = v`, `xs.append(v)`), the same holds but for those containers: they are checked, and so is every
  other local bound to one of them and every container that may hold one (`_rebound`).
Anything else is repr'd again.
"""
import hashlib
import io
import pickle
import re
import sys
import time
from _thread import _count as _thread_count
from sys import getprofile as _getprofile, gettrace as _gettrace
from itertools import chain, compress, repeat
from operator import is_, ne
from dataclasses import dataclass, field
from functools import partial

from . import values
from .code_facts import PURE_BUILTINS
from .format import START_MARKER, UNCHANGED

HIDDEN = ".@"  # first characters of locals that are not the program's own names

SCHEMA = "cwm.trace/1"
_FRAME_JSON = 105   # the keys and punctuation of one frame's JSON
_RECORD_JSON = 400  # the rest of a record's JSON: id, origin, stats
_ATOM, _WITNESS, _DEFAULT, _OTHER = values.ATOM, values.WITNESS, values.DEFAULT, values.OTHER
_ATOMIC_SCALARS = values.ATOMIC_SCALARS
_MISSING = object()
_UNCHANGED_LEN = len(UNCHANGED)
still_same = values.still_same
user_repr = values.user_repr
holds_only_atoms = values.holds_only_atoms
describe = values.describe
TRUNCATION_MARKER = values.TRUNCATION_MARKER


@dataclass
class TraceConfig:
    """What to trace and the limits of one trace (JOB.json carries the same fields)."""
    root: str
    include: tuple = ()
    exclude: tuple = ()
    depth: int = 2                      # callees inlined this many scopes below an episode's root
    function_episodes: bool = False     # also one trace per call of a project function
    max_frames: int = 10_000
    max_bytes: int = 1_000_000
    value_budget: int = 200             # characters per repr, then TRUNCATION_MARKER
    content_ids: bool = True            # each record's id a hash of its content (cwm-trace keys records itself)
    raw_values: bool = False            # keep addresses, mock ids, thread idents as the reprs had them (else ordinals)
    native_comprehensions: bool = False     # comprehensions as this interpreter runs them (else the canonical form)
    max_episodes: int = 1000            # function episodes cut from one unit; past it calls are counted, not traced
    soft_timeout_s: float = None        # stop, record "timeout"
    backend: str = "auto"               # "monitoring" | "settrace" | "auto"
    origin: dict = field(default_factory=dict)   # repo, commit: copied into every record
    virtual_files: tuple = ()           # file names without a file on disk that are in scope ("<input>")


class TraceStopped(BaseException):
    """Unwinds the traced program after the soft timeout (only where the caller asked for that)."""


_NO_LINES = {}


class _Scope:
    __slots__ = ("info", "facts", "verdicts", "frame", "eps", "prev_line", "last", "diff_base", "diff",
                 "layout", "skip", "keep", "names", "index", "ids", "kinds", "proofs", "texts", "watch", "unchanged",
                 "unchanged_size", "diff_size", "diff_cut", "scan", "stmt_shown", "hidden", "comp_lines", "noisy")

    def __init__(self, info):
        self.info = info
        self.facts = None       # info.facts, fetched on first use
        self.verdicts = {}      # {line: Recorder._verdict}, while the kinds stay as they are
        self.frame = None
        self.eps = ()           # [(episode, depth in it)]
        self.prev_line = None
        # What the last snapshot saw, position by position in f_locals order: the change detector's memory.
        self.layout = None      # all names of f_locals, hidden ones (".0") included
        self.skip = 0           # how many leading names are hidden
        self.keep = None        # positions to keep when hidden names are not all leading
        self.names = ()
        self.index = None       # {name: position}
        self.ids = ()           # id() of each value (no reference kept)
        self.kinds = ()         # values.ATOM/WITNESS/DEFAULT/OTHER, None for a name not seen yet (lists, once seen)
        self.proofs = ()
        self.texts = ()
        self.watch = ()         # positions whose value is not atomic: checked on every snapshot
        self.unchanged = {}     # {name: ".."} for every name: the diff when nothing changed
        self.unchanged_size = 0     # what `_add` counts for it (names, "..", 8 per name)
        self.diff_size = None       # the same for `diff`, and how many values it shows cut (None: not measured)
        self.diff_cut = 0
        self.last = None        # the scope's previous snapshot
        self.diff_base = None   # the snapshot `diff` is relative to (the one before the current)
        self.diff = None        # the current snapshot with "..": valid for episodes whose last frame was diff_base
        self.scan = None        # a position whose container's elements the snapshot looks at all when it ends
        self.stmt_shown = None  # the comprehension statement whose one `line` frame was this scope's last
        self.hidden = False     # a comprehension's own scope, shown as part of its statement (canonical form)
        self.comp_lines = _NO_LINES     # {line: its statement's first line} of comprehension statements (canonical)
        self.noisy = False      # a text it made may hold run-to-run noise (checked as each text is made)


def _forget_unshown(scope, witness):
    """What `witness` knew of the elements its text does not show (all atoms) may no longer hold: look at them all
    again (holds_only_atoms) before a line that uses the container is trusted again."""
    witness.all_atoms = None
    scope.verdicts = {}


def _all_known_atoms(w):
    """A flat witness whose every element is known to be an atom: what _kinds_allow lets a line use. Replacing one
    such witness with another changes no verdict."""
    return w.flat and (w.exact or w.all_atoms)


def _shape(info, layout):
    """_layout_shape of `layout`, kept per code object."""
    shape = info.layouts.get(layout)
    if shape is None:
        shape = info.layouts[layout] = _layout_shape(layout)
    return shape


def _shown_values(scope, locals_):
    """The values of f_locals that the scope shows, in its layout's order (hidden names left out)."""
    vals = tuple(locals_.values())
    if scope.skip:
        return vals[scope.skip:]
    if scope.keep is not None:
        return tuple(vals[i] for i in scope.keep)
    return vals


def _layout_shape(layout):
    """What a layout of f_locals (its names, in order) means, the same for every scope of a code object (kept in
    CodeInfo.layouts, shared, never changed): (how many leading names are hidden, the positions to keep when hidden
    names are not all leading or None, the shown names, {name: position}, {name: ".."}, what `_add` counts for
    that last dict)."""
    skip = 0
    while skip < len(layout) and layout[skip][:1] in HIDDEN:
        skip += 1
    keep = [i for i in range(skip, len(layout)) if layout[i][:1] not in HIDDEN]
    names = tuple(layout[i] for i in keep)
    if len(keep) == len(layout) - skip:
        keep = None
    else:
        skip = 0
    return (skip, keep, names, dict(zip(names, range(len(names)))), dict.fromkeys(names, UNCHANGED),
            sum(map(len, names)) + (8 + _UNCHANGED_LEN) * len(names))


class _LastCollection:
    """The info dict of the last garbage collection's start and stop, set by Recorder.gc_hook."""
    __slots__ = ("start", "stop")

    def __init__(self):
        self.start = self.stop = None


class _Episode:
    __slots__ = ("kind", "frames", "canonical", "places", "last", "nbytes", "cut", "outcome", "closed", "context",
                 "origin", "budget")

    def __init__(self, kind, context, origin, content_id):
        self.kind = kind
        self.frames = []
        # each frame as record_id hashes it: (kind, depth, place index, locals, value); None: the id is not wanted
        self.canonical = [] if content_id else None
        self.places = {}        # (path, line, source) -> its index, in order of first use
        self.last = {}          # scope -> its last snapshot shown in this episode
        self.nbytes = len(context) + _RECORD_JSON
        self.cut = 0            # values shown cut to the budget
        self.outcome = None
        self.closed = False
        self.context = context
        self.origin = origin
        self.budget = None


def mark_start(source, line_index):
    """`source` with START_MARKER appended to its line `line_index` (0-based)."""
    lines = source.split("\n")
    if 0 <= line_index < len(lines):
        lines[line_index] = lines[line_index] + START_MARKER
    return "\n".join(lines)


# Run-to-run noise in a repr, masked where a record's id is hashed: a raw memory address ("0x" and at least 6 hex
# digits, followed by what follows one inside a text: "at 0x7f..>", "0x7f..," or a str's closing quote; never by the
# end of the text: there the serialiser's own bytes follow), and the numbers values.StableNumbers rewrites (raw or
# already ordinals): an address after "at 0x", a mock's id='N', a thread's "started [daemon ]N". Only the number
# goes: the id is the same whichever ordinals (or raw addresses) a recorder or backend showed.
_ADDRESS = re.compile(rb"(?<=0x)[0-9a-fA-F]{6,}(?=[>)\],;:\s'\"])|(?<=at 0x)[0-9a-fA-F]+|(?<=id=')[0-9]+(?=')"
                      rb"|(?<=started |stopped )(?:daemon )?[0-9]+")


def _canonical_bytes(value):
    """pickle (protocol 4) without its memo: the same bytes for equal str/int/tuple/list/dict/None whatever objects
    happen to be shared (the memo would write a second occurrence as a reference), about twice as fast as marshal."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, 4)
    pickler.fast = True
    pickler.dump(value)
    return buffer.getvalue()


def record_id(record):
    """Stable content hash of a record: the same trace gets the same id whichever backend made it and however long
    it took; memory addresses in reprs are masked (they differ from run to run).

    What is hashed is the record in a canonical form (`_canonical_bytes`): the record without its frames, then each
    frame as (kind, depth, place, locals, value), then the places, the distinct (path, line, source) in order of
    first use. A frame's path and source text are the same on every pass over a line: written once, they halve the
    bytes to serialise and hash.
    """
    places = {}
    frames = [(f["kind"], f["depth"], places.setdefault((f["path"], f["line"], f["source"]), len(places)),
               f["locals"], f["value"]) for f in record.get("frames", ())]
    return _record_id(record, frames, places)


def _record_id(record, frames, places):
    """record_id from the canonical frames and {place: index}, as the recorder keeps them while it adds frames."""
    body = {k: v for k, v in record.items() if k not in ("id", "stats", "backend", "frames")}
    body["stats"] = {k: v for k, v in record.get("stats", {}).items() if k != "wall_s"}
    data = _canonical_bytes((body, frames, list(places)))
    # No `b"0x" in data` test first: the regex's own scan for its literal prefix is faster than that search, and
    # sub() gives back the same bytes when nothing matches.
    return hashlib.sha256(_ADDRESS.sub(b"?", data)).hexdigest()[:32]


_COMP_QUALNAME = re.compile(r"\.<(?:list|set|dict)comp>(?=\.)")


def _inline_qualnames(text):
    """A qualname as 3.12+ writes it (PEP 709): a function made inside a comprehension is the enclosing
    function's (`f.<locals>.<lambda>`), not the comprehension's (`f.<locals>.<listcomp>.<lambda>`, 3.11)."""
    return _COMP_QUALNAME.sub("", text) if "comp>." in text else text


def _stabilise(ep, text):
    """Rewrite an episode's texts with `text` (`_rewriter`'s): run-to-run noise (values.StableNumbers:
    addresses, mock ids, thread idents) becomes ordinals in order of first appearance in the trace (locals in frame
    order, then the value). Done once per finished trace, off the per-line path. A locals dict may be shared by
    frames (and episodes): a changed one is copied, each distinct dict rewritten once."""
    changed = False
    rewritten = {}      # id(locals dict) -> the dict to show (the same one when it holds no noise)
    join = "\0".join
    for frame in ep.frames:
        loc = frame["locals"]
        if loc is not None:
            done = rewritten.get(id(loc))
            if done is None:
                shown = join(loc.values())
                done = loc
                if " at 0x" in shown or "id='" in shown or ", st" in shown or "comp>." in shown:
                    # One pass over all the texts at once (no pattern reaches across the NUL between them).
                    new = text(shown)
                    if new is not shown and new != shown:
                        parts = new.split("\0")
                        if len(parts) == len(loc):
                            done = dict(zip(loc, parts))
                        else:   # a text holding a NUL itself: one by one
                            done = {n: text(t) for n, t in loc.items()}
                        changed = True
                rewritten[id(loc)] = done
            if done is not loc:
                frame["locals"] = done
        else:
            value = frame["value"]
            if value is not None:
                shown = frame["value"] = text(value)
                changed = changed or shown is not value
    origin_input = ep.origin.get("input")
    if isinstance(origin_input, str):
        ep.origin["input"] = text(origin_input)
    canonical = ep.canonical
    if canonical is not None and changed:   # what record_id hashes: the frames as shown (the lists run in step)
        for i, (frame, (kind, d, k, _, _)) in enumerate(zip(ep.frames, canonical)):
            canonical[i] = (kind, d, k, frame["locals"], frame["value"])


class Recorder:
    """Builds trace records from a backend's calls and hands each finished one to `emit(record)`."""

    def __init__(self, config, emit, *, backend_name, entry_code=None, entry_origin=None, entry_context=None):
        self.config = config
        self.emit = emit
        self.backend_name = backend_name
        self.entry_code = entry_code
        self.entry_origin = entry_origin or {}
        self.entry_context = entry_context      # (source, def line index) or None: the entry file
        self.entry_scope = None
        self.entry_done = False
        self.entry_record = None
        self.stack = []
        self.suspended = {}                     # id(frame) -> scope of a suspended generator/coroutine
        self.last_line_scope = None             # the scope whose line event was the last event of all
        # What may run beside the traced code, unseen by any line's bytecode (see _snapshot): the tracer's own
        # threads (set by the session; any other thread, and values may change under a line that mutates nothing),
        # and garbage collections.
        self.threads = -1
        self.own_trace = None       # the trace function the backend installed (None: sys.monitoring)
        # A garbage collection may run finalizers and weakref callbacks (and the program's own gc callbacks), at any
        # moment, even inside the tracer: like another thread, a profile function or a trace function that is not
        # the backend's, that is code no line shows, and `_snapshot` trusts no line across one. The session puts
        # `gc_hook` in gc.callbacks: each collection sets `gc_last.start` and `.stop` to its info dict, a new dict
        # each time (the one last seen is kept alive, so its id cannot come back). The hook is made of C functions
        # only: no Python code runs in it, so it can never be where the alarm that ends a slow repr lands (an
        # exception raised in a gc callback is swallowed). Not seen: threads started by native code,
        # Python signal handlers, audit hooks. (A thread started by one line and ended before the next still shows
        # at the snapshot between them.)
        self.gc_last = _LastCollection()
        self.gc_hook = partial(setattr, self.gc_last)
        self.alone_scope = None     # the scope of the last snapshot, when nothing else could run then...
        self.alone_collected = _MISSING     # ...and the last collection's info dict then
        self.open = []                          # episodes not yet finished
        self.stop_requested = False
        self.on_stop = None                     # called after the soft timeout has flushed everything
        self.python = "%d.%d.%d" % sys.version_info[:3]
        self.budget = config.value_budget
        self.max_frames, self.max_bytes = config.max_frames, config.max_bytes
        # A frame whose JSON is shorter than this holds no value cut to the budget: no need to look for markers.
        self.cut_floor = _FRAME_JSON + config.value_budget + len(TRUNCATION_MARKER)
        self.episodes_left = config.max_episodes    # function episodes that may still be cut
        self.episodes_skipped = 0                   # calls past max_episodes: no episode of their own
        # What finished traces' texts go through (None: nothing): ordinals for run-to-run noise, and on 3.11 the
        # qualnames of functions made in comprehensions as 3.12+ writes them (the canonical comprehension form).
        numbers = not config.raw_values
        comps = sys.version_info < (3, 12) and not config.native_comprehensions
        if numbers and comps:
            self.rewrite = lambda: (lambda t, n=values.StableNumbers().text: n(_inline_qualnames(t)))
        elif numbers:
            self.rewrite = lambda: values.StableNumbers().text
        elif comps:
            self.rewrite = lambda: _inline_qualnames
        else:
            self.rewrite = None
        # The unit of origin every episode shares (a test, a function call of cwm-trace functions): the held-out
        # split follows it, so the function episodes cut from a test go where its own trace goes.
        self.unit = self.entry_origin.get("unit")
        if self.unit is None and entry_code is not None:
            self.unit = "%s::%s" % (entry_code.co_filename, getattr(entry_code, "co_qualname", entry_code.co_name))

    # ---- events -------------------------------------------------------------------------------------------
    def enter(self, frame, info, resumed):
        """A scope starts (resumed=False) or a suspended generator/coroutine resumes. Returns the scope."""
        if self.stop_requested:
            self._stop()
        self.last_line_scope = None
        scope = self.suspended.pop(id(frame), None) if resumed else None
        if scope is None:
            scope = _Scope(info)
            resumed = False
        scope.frame = frame
        parent = self.stack[-1] if self.stack else None
        if info.comprehension and parent is not None and not self.config.native_comprehensions:
            # Canonical form: a comprehension's own scope (3.11) shows nothing; its callees are the enclosing
            # scope's, one level below it, as on 3.12+ where the comprehension runs inline.
            scope.hidden = True
            scope.eps = [(ep, d) for ep, d in parent.eps if not ep.closed]
            self.stack.append(scope)
            return scope
        depth = self.config.depth
        eps = [(ep, d + 1) for ep, d in parent.eps if d < depth and not ep.closed] if parent is not None else []
        scope.stmt_shown = None
        if not self.config.native_comprehensions:
            scope.comp_lines = info.comp_lines
        if not resumed:
            if self.entry_scope is None and not self.entry_done and info.code is self.entry_code:
                self.entry_scope = scope
                eps.append((self._new_episode(scope, "entry"), 0))
            elif (self.config.function_episodes and info.is_function and self.entry_scope is not None
                  and not self.entry_done):
                if self.episodes_left > 0:
                    self.episodes_left -= 1
                    eps.append((self._new_episode(scope, "function"), 0))
                else:
                    self.episodes_skipped += 1
        scope.eps = eps
        self.stack.append(scope)
        if eps:
            self._add(scope, "call", info.def_line, self._snapshot(scope, False), None)
        return scope

    def line(self, scope, line):
        if self.stop_requested:
            self._stop()
        if line in scope.comp_lines or scope.hidden:
            self._comprehension_line(scope, line, scope.comp_lines.get(line))
            return
        if scope.eps:
            self._add(scope, "line", line, self._snapshot(scope, self.last_line_scope is scope), None)
        scope.prev_line = line
        scope.stmt_shown = None
        self.last_line_scope = scope

    def _comprehension_line(self, scope, line, stmt):
        """Canonical comprehension form: a statement holding a list/set/dict comprehension is one `line` frame, at
        its first line, however many line events its evaluation reports (3.12+ reports the comprehension's
        iterations and lines in an order of their own; 3.11 runs it as a scope of its own, which shows nothing).
        The next snapshot trusts no earlier one: lines ran that no snapshot saw."""
        self.last_line_scope = None
        if scope.hidden or scope.stmt_shown == stmt:
            return
        scope.stmt_shown = stmt
        if scope.eps:
            self._add(scope, "line", stmt, self._snapshot(scope, False), None)
        scope.prev_line = line

    def exception(self, scope, line, exc):
        self.last_line_scope = None
        if not self.config.native_comprehensions:
            if scope.hidden:
                return
            line = scope.info.comp_lines.get(line, line)
        if scope.eps:
            self._add(scope, "exception", line, None, values.safe_repr(exc, self.budget)[0])

    def leave(self, scope, how, value, line):
        """The scope returns (how="return"), yields ("yield") or is left by an exception ("unwind")."""
        self.last_line_scope = None
        if scope.hidden:
            if self.stack and self.stack[-1] is scope:
                self.stack.pop()
            elif scope in self.stack:
                self.stack.remove(scope)
            scope.frame = None
            return
        if not self.config.native_comprehensions:
            line = scope.info.comp_lines.get(line, line)
        if scope.eps and how != "unwind":
            self._add(scope, "return", line, None, values.safe_repr(value, self.budget)[0])
        stack = self.stack
        if stack and stack[-1] is scope:
            stack.pop()
        elif scope in stack:
            stack.remove(scope)
        if how == "yield":
            self.suspended[id(scope.frame)] = scope
        scope.frame = None
        for ep, d in scope.eps:
            if d == 0 and not ep.closed:
                self._finish(ep, "raised" if how == "unwind" else "returned")
        if scope is self.entry_scope:
            self.entry_done = True

    # ---- values -------------------------------------------------------------------------------------------
    def _snapshot(self, scope, after_own_line):
        """{name: repr text} of the scope's locals now, reusing every repr that provably still holds.

        C-level passes find the locals whose object changed (by id: an atomic value is kept alive by its proof, so
        its id cannot be reused); only those, and the non-atomic ones, are looked at in Python.
        """
        locals_ = scope.frame.f_locals
        if scope.last is None:
            self.alone_scope = None
            return self._first_snapshot(scope, locals_)
        trusted = False
        if scope.watch:
            # Can the line that just ran have changed a value it did not rebind? Only non-atomic values need the
            # answer. First: no code that no line shows ran since the last snapshot (no garbage collection: see
            # gc_last), then: the line cannot have changed them, or only its targets (_verdict). A quiet or confined
            # line starts no thread and sets no hook, so what the last untrusted snapshot found still holds after it.
            gc_last = self.gc_last
            collected = gc_last.stop
            if after_own_line and self.alone_scope is scope and self.alone_collected is collected:
                verdict = scope.verdicts.get(scope.prev_line)
                if verdict is None:
                    verdict = self._verdict(scope, locals_)
                trusted = verdict is True or (verdict is not False and self._globals_pure(scope, verdict))
                trusted = trusted and gc_last.stop is collected     # none ran while deciding (it allocates)
            if not trusted:
                clean = _thread_count() == self.threads and _getprofile() is None and _gettrace() is self.own_trace
                self.alone_scope = scope if clean else None
            self.alone_collected = collected
        else:
            self.alone_scope = None     # unchecked: the next snapshot cannot rely on this one
        old_ids = scope.ids
        rebound = self._rebound(scope, locals_) if trusted else None
        if rebound is not None:
            todo, ids, checks, vals, atoms_in = rebound
            relaid = False
        else:       # untrusted, or the line bound a new name: look at everything
            layout = tuple(locals_)
            relaid = layout != scope.layout
            if relaid:
                self._relayout(scope, layout)
                old_ids = scope.ids
            checks, atoms_in = scope.watch, False
            vals = _shown_values(scope, locals_)
            ids = tuple(map(id, vals))
        if ids == old_ids and not checks:
            # Every value still the same object (the proofs keep atoms alive), and none that is not atomic can have
            # changed: nothing to look at.
            scope.diff_base = cur = scope.last
            scope.diff = scope.unchanged
            scope.diff_size, scope.diff_cut = scope.unchanged_size, 0
            return cur
        names, kinds, proofs, texts = scope.names, scope.kinds, scope.proofs, scope.texts
        changed = []            # positions whose text changed
        if rebound is None:
            todo = compress(range(len(ids)), map(ne, ids, old_ids))
        budget = self.budget
        if checks:
            # Non-atomic values still bound to the same object: check their proofs here, a flat container's inline
            # (values.still_same's first case), a user __repr__ run again; only those whose proof fails join the
            # values to look at.
            failed = []
            for i in checks:
                if ids[i] != old_ids[i]:
                    continue            # a new object: looked at below
                kind, value, proof = kinds[i], vals[i], proofs[i]
                if kind == _WITNESS:
                    t = proof.type
                    if proof.flat and type(value) is t:
                        n = len(value)
                        if (n == proof.need if proof.exact else n >= proof.need) and all(
                                map(is_, chain.from_iterable(value.items()) if t is dict else value, proof.items)):
                            if proof.all_atoms and not atoms_in:    # something else may have gone in
                                _forget_unshown(scope, proof)
                            continue
                    elif still_same(value, proof):
                        continue
                elif kind == _DEFAULT:
                    if proof.holds(value):
                        continue
                elif proof is type(value):      # OTHER, a user __repr__: run it again (the naive way)
                    text = user_repr(value, budget)
                    if text != texts[i]:
                        changed.append(i)
                        texts[i] = text
                    continue
                failed.append(i)
            if failed:
                todo = sorted(chain(todo, failed))
        regroup = False
        for i in todo:
            value = vals[i]
            kind = kinds[i]
            t = type(value)
            if t is int or t is float or t is bool or value is None:   # the common case, inlined
                try:
                    text = repr(value)
                except ValueError:      # an int over sys.int_max_str_digits
                    text = describe(value, budget)[0]
                if len(text) > budget:
                    text = text[:budget] + TRUNCATION_MARKER
                if text != texts[i]:
                    changed.append(i)
                    texts[i] = text
                if kind != _ATOM:
                    regroup = True
                    scope.verdicts = {}
                kinds[i] = _ATOM
                proofs[i] = value
                continue
            if kind is not None and kind != _ATOM and ids[i] != old_ids[i]:   # a new object may have the same repr
                if kind == _WITNESS:
                    proof = proofs[i]
                    if still_same(value, proof):
                        if proof.all_atoms:     # what it knew was of another object
                            _forget_unshown(scope, proof)
                        continue
                elif kind == _DEFAULT:
                    if proofs[i].holds(value):
                        continue
            old = proofs[i]
            text, new_kind, proof = describe(value, budget)
            proofs[i] = proof
            if text != texts[i]:
                changed.append(i)
                texts[i] = text
            if (new_kind == _ATOM) != (kind == _ATOM):
                regroup = True
            if new_kind == _WITNESS and kind == _WITNESS:
                if atoms_in and old.all_atoms:
                    # A target of the line: it held atoms only, the line put atoms in.
                    proof.all_atoms, proof.asks = True, old.asks
                if _all_known_atoms(proof) and _all_known_atoms(old):
                    continue    # lines may use it as they used the old one: every verdict holds
            if new_kind != kind or new_kind == _WITNESS:
                scope.verdicts = {}     # a new kind, or a witness whose elements may not all be atoms
            kinds[i] = new_kind
        if scope.scan is not None:    # what a confined line needs to know before it runs (_kinds_allow)
            i, scope.scan = scope.scan, None
            if kinds[i] == _WITNESS and proofs[i].flat:
                holds_only_atoms(vals[i], proofs[i])
        value = None
        if regroup:
            scope.watch = [i for i, k in enumerate(kinds) if k != _ATOM]
        scope.ids = ids
        last = scope.last
        # The new snapshot and its diff, copied from the last ones (same names) with the changed texts put in.
        if relaid or last is None:
            cur = dict(zip(names, texts))
        elif changed:
            cur = last.copy()
            for i in changed:
                cur[names[i]] = texts[i]
        else:
            cur = last
        size, cut = scope.unchanged_size, 0
        if changed:
            diff = scope.unchanged.copy()
            for i in changed:
                text = diff[names[i]] = texts[i]
                size += len(text) - _UNCHANGED_LEN
                if text.endswith(TRUNCATION_MARKER):
                    cut += 1
                if " at 0x" in text or "id='" in text or ", st" in text or "comp>." in text:
                    scope.noisy = True      # _finish rewrites only the traces of such scopes
        else:
            diff = scope.unchanged
        scope.diff_base = last
        scope.diff = diff
        scope.diff_size, scope.diff_cut = size, cut
        scope.last = cur
        return cur

    @staticmethod
    def _rebound(scope, locals_):
        """After a trusted line: (the positions of the locals it rebound to another object, the new ids, the
        positions whose proof must be checked, {position: value} for both, whether what it put into containers
        was atoms), or None when the set of names shown changed.

        A quiet line changed no value but those of the locals it stores. A confined one also changed its targets'
        containers: they, every other local bound to one of them, and every container that may hold one (its
        elements not all atoms) are checked; a container of atoms cannot hold one, an object with a fixed repr does
        not show it."""
        line = scope.facts[scope.prev_line]
        index, ids = scope.index, scope.ids
        todo, vals = [], {}
        for name in line.stores:
            value = locals_.get(name, _MISSING)
            i = index.get(name)
            if i is None:
                if value is _MISSING or name[:1] in HIDDEN:
                    continue    # not shown, before or now
                return None
            if value is _MISSING:
                return None
            if id(value) != ids[i]:
                todo.append(i)
                vals[i] = value
        checks, atoms_in = (), True
        if line.targets:    # plain loops: a comprehension is a call of its own before 3.12
            kinds, proofs, names = scope.kinds, scope.proofs, scope.names
            changed = set()
            for name in line.targets:
                changed.add(ids[index[name]])
            checks = []
            for i in scope.watch:
                if ids[i] in changed or (kinds[i] == _WITNESS and not proofs[i].flat):
                    checks.append(i)
                    vals[i] = locals_[names[i]]
            atoms_in = line.fills is not None
            if atoms_in:
                for name in line.fills:
                    if kinds[index[name]] != _ATOM:
                        atoms_in = False
                        break
        if todo:
            new = list(ids)
            for i in todo:
                new[i] = id(vals[i])
            ids = tuple(new)
        return todo, ids, checks, vals, atoms_in

    def _first_snapshot(self, scope, locals_):
        """_snapshot of a scope that has none yet: its layout, every value described, the whole snapshot its own
        diff. Most scopes are short (a call, a line or two, a return), so this is made in one pass."""
        scope.layout = layout = tuple(locals_)
        scope.skip, scope.keep, names, scope.index, scope.unchanged, size = _shape(scope.info, layout)
        scope.unchanged_size = size
        vals = _shown_values(scope, locals_)
        scope.names = names
        scope.ids = tuple(map(id, vals))
        budget = self.budget
        scope.kinds = kinds = []
        scope.proofs = proofs = []
        scope.texts = texts = []
        scope.watch = watch = []
        cut = 0
        for i, value in enumerate(vals):
            text, kind, proof = describe(value, budget)
            kinds.append(kind)
            proofs.append(proof)
            texts.append(text)
            if kind != _ATOM:
                watch.append(i)
            if text.endswith(TRUNCATION_MARKER):
                cut += 1
            if " at 0x" in text or "id='" in text or ", st" in text or "comp>." in text:
                scope.noisy = True
        scope.diff_base = None
        scope.diff = scope.last = cur = dict(zip(names, texts))
        scope.diff_size = size + sum(map(len, texts)) - _UNCHANGED_LEN * len(texts)
        scope.diff_cut = cut
        return cur

    def _verdict(self, scope, locals_):
        """What is known of the line that just ran (scope.prev_line), cached in scope.verdicts until a kind changes:
        False when it may have changed a value it did not rebind, True when it cannot have, or its LineFacts when
        that depends on what its global names are bound to now (`_globals_pure`).

        The line's bytecode mutates nothing (code_facts.LineFacts), every callee is a pure builtin or a pure method,
        and what it works on is builtin values only, checked against the last snapshot's kinds (taken before it
        ran): atoms, and containers whose every element was shown and is an atom. Then no code but the builtins'
        own C code can have run during the line, whatever the backend sees of calls (sys.monitoring sees none out of
        scope; a C function set as a class's dunder runs unseen by either). What could still run is asynchronous or
        hooked: other threads, finalizers run by the cycle collector, a profile function; `_snapshot` rules those out.
        """
        facts = scope.facts
        if facts is None:
            facts = scope.facts = scope.info.facts
        line = facts.get(scope.prev_line)
        allowed = line is not None and self._kinds_allow(scope, line, locals_)
        if allowed is None:
            return False        # not yet known: not kept, asked again next time
        if not allowed:
            verdict = False
        elif line.globals:
            verdict = line
        else:
            verdict = line.calls <= line.pure_methods
        scope.verdicts[scope.prev_line] = verdict
        return verdict

    @staticmethod
    def _globals_pure(scope, line):
        """Every global name the line loads is a pure builtin or an atom, and they cover all its calls. Looked up
        each time: a line that ran since (not a quiet one) may have rebound them."""
        pure = line.pure_methods
        frame = scope.frame
        found, builtins_ = frame.f_globals, frame.f_builtins
        for name in line.globals:
            value = found.get(name, _MISSING)
            if value is _MISSING:
                value = builtins_.get(name, _MISSING)
            if id(value) in PURE_BUILTINS:
                pure += 1
            elif type(value) not in _ATOMIC_SCALARS:
                return False
        return pure >= line.calls

    @staticmethod
    def _kinds_allow(scope, line, locals_):
        """The part of _verdict that depends only on the kinds of the scope's values (and, for a container that
        lasts, on all its elements: values.holds_only_atoms). None: not before the container has lasted a while."""
        index, kinds, proofs = scope.index, scope.kinds, scope.proofs
        if _OTHER in kinds or line.iterates or line.rereads:
            # A user __repr__ runs on every snapshot and may change anything; the iterator a `for` line advances,
            # or a value the line reread, is not what the snapshot saw.
            return False
        for name in line.inplace:           # `n += 1` on an atom rebinds n; on a list it would mutate the list
            i = index.get(name)
            if i is None or kinds[i] != _ATOM:
                return False
        for name in line.stores:
            # The value a store replaced may have died, its __del__ run unseen (3.11's settrace drops the frame's
            # old references while it syncs f_locals, with tracing off).
            i = index.get(name)
            if i is not None and kinds[i] is not None and kinds[i] != _ATOM:
                return False
        for name in line.loads:
            # Only builtin values, all of them shown: no operator of the line can reach a dunder method (not even
            # a C function stored as one, which runs no Python code to be seen) or an element never looked at.
            # The line's targets are among them: builtin containers of atoms (an element one drops has no __del__),
            # or atoms, which have no method that changes them (the line raises).
            i = index.get(name)
            if i is None:
                return False
            kind = kinds[i]
            if kind == _ATOM:
                continue
            proof = proofs[i]
            if kind != _WITNESS or not proof.flat:
                return False
            if not proof.exact:     # the elements it does not show: look at them all, if it lasts
                if name in line.stores:
                    return False
                proof.asks += 1
                if proof.asks < 3:
                    return None
                value = locals_[name]
                if id(value) != scope.ids[i]:
                    return False
                if line.targets:
                    # It may have changed containers: what counts is what they held before it ran, known only if a
                    # snapshot before looked (kept while no line put anything else in): this one looks at its end.
                    if proof.all_atoms is None:
                        scope.scan = i
                        return None
                    if not proof.all_atoms:
                        return False
                elif not holds_only_atoms(value, proof):
                    return False
        return True

    @staticmethod
    def _relayout(scope, layout):
        """The set or order of local names changed: carry what is known over to the new positions."""
        scope.layout = layout
        scope.skip, scope.keep, names, index, scope.unchanged, scope.unchanged_size = _shape(scope.info, layout)
        old = scope.index
        kinds, proofs, texts, ids = [], [], [], []
        for name in names:
            i = old.get(name)
            if i is None:
                kinds.append(None), proofs.append(None), texts.append(None), ids.append(0)
            else:
                kinds.append(scope.kinds[i]), proofs.append(scope.proofs[i]), texts.append(scope.texts[i])
                ids.append(scope.ids[i])
        ids = tuple(ids)
        scope.names, scope.index = names, index
        scope.kinds, scope.proofs, scope.texts, scope.ids = kinds, proofs, texts, ids
        scope.watch = [i for i, k in enumerate(kinds) if k != _ATOM]
        scope.verdicts = {}
        scope.scan = None       # a position in the old layout

    # ---- episodes -----------------------------------------------------------------------------------------
    def _new_episode(self, scope, kind):
        info = scope.info
        if kind == "entry":
            origin = {"kind": "function", "path": info.path, "qualname": info.qualname, "input": None}
            origin.update(self.entry_origin)
            if self.entry_context is not None:
                source, index = self.entry_context
                context = mark_start(source, index)
            else:
                context = info.context(START_MARKER)
        else:
            origin = {"kind": "function", "path": info.path, "qualname": info.qualname, "input": None}
            context = info.context(START_MARKER)
        origin = {"repo": self.config.origin.get("repo"), "commit": self.config.origin.get("commit"), **origin,
                  "unit": self.unit}
        ep = _Episode(kind, context, origin, self.config.content_ids)
        self.open.append(ep)
        return ep

    def _add(self, scope, kind, line, cur, value):
        info = scope.info
        place = info.places.get(line)
        if place is None:
            place = info.place(line)
        path, _, source = place
        base = _FRAME_JSON + len(path) + len(source)        # about what the frame's JSON will take
        memo_prev, memo_loc = scope.diff_base, scope.diff
        weighed = None                                       # the locals dict last measured, its size and cuts
        if cur is None:
            size, cut = base + len(value), value.endswith(TRUNCATION_MARKER)
            if " at 0x" in value or "id='" in value or ", st" in value or "comp>." in value:
                scope.noisy = True
        elif memo_loc is not None and scope.diff_size is not None:     # the fast snapshot measured its diff
            weighed, size = memo_loc, base + scope.diff_size
            cut = scope.diff_cut if size > self.cut_floor else 0     # as counted below
        max_frames, max_bytes = self.max_frames, self.max_bytes
        for ep, d in scope.eps:
            if ep.closed:
                continue
            if cur is not None:
                last = ep.last
                prev = last.get(scope)
                if prev is None:
                    loc = cur
                elif prev is memo_prev and memo_loc is not None:
                    loc = memo_loc
                else:
                    loc = {n: (UNCHANGED if prev.get(n) == t else t) for n, t in cur.items()}
                    memo_prev, memo_loc = prev, loc
                last[scope] = cur
                if loc is not weighed:
                    weighed = loc
                    shown = loc.values()
                    size = base + 8 * len(loc) + sum(map(len, loc)) + sum(map(len, shown))
                    cut = sum(map(str.endswith, shown, repeat(TRUNCATION_MARKER))) if size > self.cut_floor else 0
            else:
                loc = None
            frames = ep.frames
            if len(frames) >= max_frames:
                self._finish(ep, "frame_budget", "frames")
                continue
            if ep.nbytes + size > max_bytes:
                self._finish(ep, "frame_budget", "bytes")
                continue
            ep.nbytes += size
            ep.cut += cut
            frames.append({"kind": kind, "depth": d, "path": path, "line": line, "source": source,
                           "locals": loc, "value": value})
            if ep.canonical is not None:    # the frame as record_id hashes it, made here at a fraction of the cost
                places = ep.places
                k = places.get(place)
                if k is None:
                    k = places[place] = len(places)
                ep.canonical.append((kind, d, k, loc, value))
            if kind == "call" and d == 0 and ep.kind == "function":
                ep.origin["input"] = ", ".join(f"{n}={t}" for n, t in cur.items())

    def _finish(self, ep, outcome, budget=None):
        ep.closed = True
        ep.outcome = outcome
        ep.budget = budget
        if ep in self.open:
            self.open.remove(ep)
        frames = ep.frames
        # Only a trace with a scope that made a noisy text needs the rewrite: every scope with frames in it has
        # one in ep.last (its call frame comes first), and a return or exception value marks its scope too.
        if self.rewrite is not None and any(scope.noisy for scope in ep.last):
            _stabilise(ep, self.rewrite())
        # No wall time: the same program traced twice gives byte-identical records (timing is the run log's).
        stats = {"frames": len(frames), "truncated_values": ep.cut}
        if budget:
            stats["budget"] = budget
        if ep.kind == "entry" and self.episodes_skipped:
            stats["episodes_skipped"] = self.episodes_skipped   # calls past max_episodes (say so, never drop silently)
        record = {"schema": SCHEMA, "origin": ep.origin, "python": self.python, "backend": self.backend_name,
                  "context": ep.context, "frames": frames, "outcome": outcome, "stats": stats}
        record = {"id": _record_id(record, ep.canonical, ep.places) if ep.canonical is not None else "", **record}
        ep.frames = ep.last = ep.canonical = ep.places = None
        if ep.kind == "entry":
            self.entry_record = record
        self.emit(record)

    def finish_all(self, outcome):
        """Close every open episode (soft timeout, or tracing stopped before they ended)."""
        for ep in list(self.open):
            self._finish(ep, outcome)

    def request_stop(self):
        """From any thread: the soft timeout passed. The traced thread flushes at its next event."""
        self.stop_requested = True

    def _stop(self):
        self.stop_requested = False
        self.finish_all("timeout")
        self.entry_done = True
        if self.on_stop is not None:
            self.on_stop()
