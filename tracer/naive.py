"""The naive reference recorder: the test oracle for the `".."` diff, and the speed baseline of
benchmarks/test_tracer_speed.py.

It does the obvious thing: on every frame, `repr()` of every local, cut to the budget afterwards, with no caches and
no bytecode facts; a local is written ".." only when that fresh text equals the one shown before. Everything else
(events, episodes, budgets, placeholders for hostile reprs) is the production Recorder's: what this checks is that
the fast recorder's reuse of earlier reprs never shows a stale value. Tests run a corpus and random programs through
both and require identical records.

`NaiveCutRecorder` serialises with the fast recorder's budget-bounded serialiser instead of plain repr:
the benchmark reports both, to show what the change detector alone buys.
"""
from . import values
from .recorder import HIDDEN, Recorder

_CONTAINERS = (list, tuple, dict, set, frozenset)


def plain_repr(value, budget):
    """repr(value) cut to `budget`; what a builtin container's repr cannot give (a raising or hanging element)
    comes from values.safe_repr, so the text is the production recorder's in every case."""
    t = type(value)
    text = None
    if t is str:
        text = repr(value)
    elif t in _CONTAINERS:
        text, _ = values.guarded_repr(value)
    if text is None:
        return values.safe_repr(value, budget)[0]
    return values.cut_text(text, budget)


class NaiveRecorder(Recorder):
    cut_walk = False

    def _snapshot(self, scope, after_own_line):
        budget = self.budget
        serialise = plain_repr if not self.cut_walk else (lambda v, b: values.safe_repr(v, b)[0])
        scope.diff = None   # the recorder then diffs each episode against the frame it showed last, text by text
        shown = {name: serialise(value, budget)
                 for name, value in scope.frame.f_locals.items() if name[:1] not in HIDDEN}
        joined = "\0".join(shown.values())
        if " at 0x" in joined or "id='" in joined or ", st" in joined or "comp>." in joined:
            scope.noisy = True
        return shown


class NaiveCutRecorder(NaiveRecorder):
    """The naive recorder with the fast recorder's budget-bounded serialiser."""
    cut_walk = True
