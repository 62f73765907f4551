"""Rollouts overlap learning with bounded staleness (cwm/rl/producer.py)."""
import threading
import time

import pytest

from cwm.rl.producer import RolloutProducer
from cwm.rl.rollout import Trajectory


class VersionedSampler:
    """Stands in for a generator: `sync` loads the newest pushed version, batches are tagged with the loaded one."""

    def __init__(self):
        self.pushed = self.loaded = 0
        self.started = []   # (batch index, learner version pushed when the batch started)
        self.lock = threading.Lock()

    def sync(self):
        with self.lock:
            self.loaded = self.pushed

    def make_batch(self, i):
        self.started.append((i, self.pushed))
        time.sleep(0.02)
        return [Trajectory(env="t", task=i, group=i, tokens=[1], mask=[0], logprobs=[0.0], version=self.loaded)]


@pytest.mark.parametrize("max_staleness", [0, 1, 2])
def test_producer_runs_ahead_at_most_k_versions(max_staleness):
    s = VersionedSampler()
    producer = RolloutProducer(s.make_batch, s.sync, max_staleness).start()
    try:
        for step in range(6):
            fresh, stale = producer.get(learner_version=step)
            assert len(fresh) == 1 and not stale
            assert 0 <= step - fresh[0].version <= max_staleness
            time.sleep(0.05)  # the learner's step: the producer works meanwhile (when allowed to)
            with s.lock:
                s.pushed = step + 1
            producer.advance(step + 1)
    finally:
        producer.close()
    # batch i never starts before the learner reached version i - K ...
    assert all(v >= i - max_staleness for i, v in s.started)
    # ... and with K > 0 it does start earlier than a synchronous loop would (overlap)
    if max_staleness:
        assert any(v < i for i, v in s.started)


def test_stale_trajectories_are_dropped_and_producer_errors_surface():
    batches = iter([[Trajectory(env="t", task=0, group=0, tokens=[1], mask=[0], logprobs=[0.0], version=v)
                     for v in (0, 3, 5)]])
    producer = RolloutProducer(lambda i: next(batches), lambda: None, max_staleness=2).start()
    fresh, stale = producer.get(learner_version=5)
    assert [t.version for t in fresh] == [3, 5] and [t.version for t in stale] == [0]
    producer.advance(5)
    with pytest.raises(RuntimeError, match="rollout producer failed"):
        producer.get(learner_version=5)  # the second make_batch raised StopIteration
    producer.close()
