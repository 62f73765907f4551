"""Curriculum by pass rate: draw the tasks whose GRPO groups are likely to carry a learning signal.

With ±1 rewards and advantage = reward − group mean, a group of G episodes of a task the policy passes with
probability p has a non-zero advantage with probability P(signal) = 1 − p^G − (1 − p)^G: about 1 near p = 0.5,
0 for a task always solved or never solved (the learner skips such groups, so their rollouts are wasted).
`CurriculumSampler` keeps a running pass rate per task and draws tasks in proportion to P(signal) at that rate,
so groups concentrate where the signal is (the "informative band"), the way prime-rl's difficulty pools and
verl's curriculum sampler do, and Prefix Sampling steers group pass rates toward 50%.

Invariants:
- A task never drawn has no rate; it counts as maximally informative (drawn before known-solved/unsolved ones).
- A task whose running rate is outside the band (`band_low`, `band_high`), both exclusive (by default exactly
  0 or exactly 1: every remembered episode failed, or every one passed) gets weight 0; it is re-tested with
  probability `retest_prob` per draw, and whenever no informative task is left: always the one tested least
  recently, so a never-solved task the policy has learned, or a solved one it has forgotten, is found again.
- A task already drawn and not yet reported back (`update`) is not drawn again while others can be, so one batch
  (and the batch the producer samples ahead) does not spend several groups on one unknown task.
- The running rate forgets: each report multiplies the task's earlier counts by `decay` before adding the new
  group's, so the rate follows the policy as it learns.
- `state_dict()` holds the counts, the draw clock and the parent sampler's RNG and order; it is the RL
  checkpoint's `loader` state (`cwm/model/checkpoint.py`), so a resumed run keeps its curriculum.

Statistics are keyed by (environment name, task index), what a trajectory carries; families in one recipe
must therefore have distinct names (two codegen sets in one recipe cannot both use the curriculum).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from cwm.rl.env import EnvFactory
from cwm.rl.rollout import TaskSampler


@dataclass
class CurriculumConfig:
    enabled: bool = False           # off: tasks are drawn in a shuffled cycle (TaskSampler)
    band_low: float = 0.0           # running pass rate must be > band_low ...
    band_high: float = 1.0          # ... and < band_high for the task to count as informative
    decay: float = 0.5              # weight of a task's earlier counts at each new report (1: never forget)
    retest_prob: float = 0.1        # per draw: re-test the out-of-band task tested least recently

    def validate(self) -> None:
        if not 0.0 <= self.band_low < self.band_high <= 1.0:
            raise ValueError(f"curriculum: band_low {self.band_low} / band_high {self.band_high}: need "
                             "0 <= band_low < band_high <= 1")
        if not 0.0 < self.decay <= 1.0:
            raise ValueError(f"curriculum: decay {self.decay}: need 0 < decay <= 1")
        if not 0.0 <= self.retest_prob <= 1.0:
            raise ValueError(f"curriculum: retest_prob {self.retest_prob}: need a probability in [0, 1]")


def signal_probability(p: float, group_size: int) -> float:
    """P(a group of `group_size` episodes at pass rate p is neither all-pass nor all-fail)."""
    return 1.0 - p ** group_size - (1.0 - p) ** group_size


class CurriculumSampler(TaskSampler):
    """A `TaskSampler` (families by weight, as before) that picks the task inside a family by its pass rate."""

    def __init__(self, factories: list[EnvFactory], weights: list[float] | None = None, seed: int = 0, *,
                 cfg: CurriculumConfig | None = None, group_size: int = 8):
        super().__init__(factories, weights, seed)
        names = [f.name for f in factories]
        if len(set(names)) != len(names):
            raise ValueError(f"curriculum: environment families {names} share a name; the curriculum keys its "
                             "statistics by (name, task), so give each family its own kind or turn it off")
        self.cfg = cfg or CurriculumConfig(enabled=True)
        self.cfg.validate()
        self.group_size = group_size
        self._family = {name: k for k, name in enumerate(names)}
        self._passes: list[dict[int, float]] = [{} for _ in factories]   # decayed pass counts
        self._trials: list[dict[int, float]] = [{} for _ in factories]   # decayed episode counts
        self._tested: list[dict[int, int]] = [{} for _ in factories]     # draw clock at the last draw
        self._clock = 0
        self._pending: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        self._window = {"draws": 0, "informative": 0, "retests": 0}      # since the last step_metrics()

    # -- statistics -------------------------------------------------------------------------------------------

    def pass_rate(self, family: int, task: int) -> float | None:
        n = self._trials[family].get(task, 0.0)
        return self._passes[family][task] / n if n > 0 else None

    def informative(self, rate: float | None) -> bool:
        return rate is None or self.cfg.band_low < rate < self.cfg.band_high

    def weight(self, rate: float | None) -> float:
        """The draw weight of a task at this running rate: P(signal), 1 when unknown, 0 out of the band."""
        if rate is None:
            return 1.0
        if not self.informative(rate):
            return 0.0
        return max(signal_probability(rate, self.group_size), 1e-6)

    def update(self, results) -> None:
        """Report finished episodes: an iterable of (environment name, task index, passed). Episodes of one
        task reported together count as one group (its counts are decayed once). passed=None (a void episode:
        a sandbox error, a prompt too long) only frees the task for drawing again."""
        by_task: dict[tuple[int, int], list[bool]] = {}
        for env, task, passed in results:
            if env not in self._family:
                raise ValueError(f"curriculum: an episode of environment '{env}', which is not one of the "
                                 f"sampler's families {sorted(self._family)} (an EnvFactory's name must be its "
                                 "environments' name)")
            by_task.setdefault((self._family[env], task), []).extend([] if passed is None else [bool(passed)])
        with self._lock:
            for (k, task), outcomes in by_task.items():
                self._pending.discard((k, task))
                if not outcomes:
                    continue
                d = self.cfg.decay
                self._passes[k][task] = d * self._passes[k].get(task, 0.0) + sum(outcomes)
                self._trials[k][task] = d * self._trials[k].get(task, 0.0) + len(outcomes)

    # -- drawing ----------------------------------------------------------------------------------------------

    def draw(self) -> tuple[EnvFactory, int]:
        with self._lock:
            k = self.rng.choices(range(len(self.factories)), weights=self.weights)[0]
            task, informative = self._pick(k)
            self._clock += 1
            self._tested[k][task] = self._clock
            self._pending.add((k, task))
            self._window["draws"] += 1
            self._window["informative" if informative else "retests"] += 1
            return self.factories[k], task

    def _pick(self, k: int) -> tuple[int, bool]:
        n = len(self.factories[k])
        free = [i for i in range(n) if (k, i) not in self._pending] or list(range(n))
        rates = {i: self.pass_rate(k, i) for i in free}
        out_of_band = [i for i in free if not self.informative(rates[i])]
        if out_of_band and self.rng.random() < self.cfg.retest_prob:
            return self._stalest(k, out_of_band), False
        weights = [self.weight(rates[i]) for i in free]
        if sum(weights) > 0:
            return self.rng.choices(free, weights=weights)[0], True
        return self._stalest(k, out_of_band or free), False

    def _stalest(self, k: int, tasks: list[int]) -> int:
        return min(tasks, key=lambda i: (self._tested[k].get(i, 0), i))

    # -- logging and checkpointing ----------------------------------------------------------------------------

    def step_metrics(self) -> dict[str, float]:
        """Band occupancy: the share of draws since the last call that picked an informative task (the rest were
        re-tests), and how many tasks are unseen / in the band / solved (rate >= band_high) / unsolved."""
        with self._lock:
            window, self._window = self._window, {"draws": 0, "informative": 0, "retests": 0}
            counts = {"unseen": 0, "in_band": 0, "solved": 0, "unsolved": 0}
            for k, factory in enumerate(self.factories):
                for i in range(len(factory)):
                    rate = self.pass_rate(k, i)
                    if rate is None:
                        counts["unseen"] += 1
                    elif self.informative(rate):
                        counts["in_band"] += 1
                    elif rate >= self.cfg.band_high:
                        counts["solved"] += 1
                    else:
                        counts["unsolved"] += 1
        m = {f"curriculum/{key}": float(v) for key, v in counts.items()}
        m["curriculum/band_occupancy"] = window["informative"] / window["draws"] if window["draws"] else None
        m["curriculum/retests"] = float(window["retests"])
        return m

    def state_dict(self) -> dict:
        with self._lock:
            state = super().state_dict()
            state["curriculum"] = {
                "families": [f.name for f in self.factories],
                "passes": [{str(i): v for i, v in d.items()} for d in self._passes],
                "trials": [{str(i): v for i, v in d.items()} for d in self._trials],
                "tested": [{str(i): v for i, v in d.items()} for d in self._tested],
                "clock": self._clock}
            return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        cur = state.get("curriculum")
        if cur is None:  # a checkpoint of a run without the curriculum: start its statistics now
            return
        if cur["families"] != [f.name for f in self.factories]:
            raise ValueError(f"curriculum state is for environments {cur['families']}, this recipe has "
                             f"{[f.name for f in self.factories]}; resume with the same envs or a new `out`")
        with self._lock:
            self._passes = [{int(i): v for i, v in d.items()} for d in cur["passes"]]
            self._trials = [{int(i): v for i, v in d.items()} for d in cur["trials"]]
            self._tested = [{int(i): v for i, v in d.items()} for d in cur["tested"]]
            self._clock = cur["clock"]
            self._pending = set()


def make_sampler(factories: list[EnvFactory], weights: list[float] | None, seed: int,
                 cfg: CurriculumConfig | None, group_size: int) -> TaskSampler:
    """The recipe's task sampler: the curriculum when switched on, else the shuffled cycle."""
    if cfg is not None and cfg.enabled:
        return CurriculumSampler(factories, weights, seed, cfg=cfg, group_size=group_size)
    return TaskSampler(factories, weights, seed)
