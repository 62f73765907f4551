"""The naive reference recorder: the test oracle for the `".."` diff, and the speed baseline of
benchmarks/test_tracer_speed.py.

It re-serialises every local of every frame, with no caches and no bytecode facts, so a local is written ".." only
when a fresh repr equals the one shown before. Everything else (events, episodes, budgets) is the production
Recorder's: what this checks is that the fast recorder's reuse of earlier reprs never shows a stale value.
Tests run a corpus through both and require identical records.
"""
from . import values
from .recorder import Recorder


class NaiveRecorder(Recorder):
    def _snapshot(self, scope, after_own_line):
        budget = self.budget
        scope.diff = None   # the recorder then diffs each episode against the frame it showed last, text by text
        return {name: values.safe_repr(value, budget)[0]
                for name, value in scope.frame.f_locals.items() if name[:1] != "."}
