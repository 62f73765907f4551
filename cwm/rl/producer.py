"""Rollouts and learning overlap: a producer thread samples the next batches while the learner steps.

Staleness (learner version − the version a trajectory was sampled from) is bounded twice: the producer starts
batch i only once the learner has reached version i − max_staleness (it never runs further ahead), and the learner
drops any trajectory older than that (a server may switch weights in the middle of a multi-turn episode, whose
version is then its oldest turn's). max_staleness=0 is synchronous, on-policy GRPO.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable

from cwm.rl.rollout import Trajectory


class RolloutProducer:
    def __init__(self, make_batch: Callable[[int], list[Trajectory]], sync: Callable[[], None], max_staleness: int,
                 first_batch: int = 0, end_batch: int | None = None):
        """make_batch(i) samples the i-th batch with the generator's current weights; sync() loads pushed ones.
        Batches first_batch .. end_batch - 1 are made (no end: until closed)."""
        self.make_batch = make_batch
        self.sync = sync
        self.max_staleness = max_staleness
        self._next = first_batch
        self._end = end_batch
        self._learner_version = first_batch
        self._cond = threading.Condition()
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollout-producer", daemon=True)

    def start(self) -> "RolloutProducer":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and (self._end is None or self._next < self._end):
                with self._cond:
                    self._cond.wait_for(lambda: self._stop.is_set()
                                        or self._learner_version >= self._next - self.max_staleness)
                    if self._stop.is_set():
                        return
                self.sync()
                self._queue.put(self.make_batch(self._next))
                self._next += 1
        except BaseException as e:  # surfaced to the learner by get()
            self._queue.put(e)

    def advance(self, learner_version: int) -> None:
        """The learner finished a step (and pushed its weights): the producer may run further."""
        with self._cond:
            self._learner_version = learner_version
            self._cond.notify_all()

    def get(self, learner_version: int) -> tuple[list[Trajectory], list[Trajectory]]:
        """The next batch, split into (fresh enough, dropped as stale)."""
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise RuntimeError("rollout producer failed") from item
        fresh = [t for t in item if learner_version - t.version <= self.max_staleness]
        stale = [t for t in item if learner_version - t.version > self.max_staleness]
        return fresh, stale

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=60)
