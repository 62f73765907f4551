"""The environment interface every RL task implements, so one rollout loop serves single- and multi-turn tasks.

An observation is a list of chat messages (`{"role": ..., "content": ...}`) the rollout loop appends to the
conversation before the policy's next turn; an action is the text of one assistant turn. Rewards are sparse:
0 until the episode ends, then +1 (the task's check passed) or -1 (it failed, or the output was malformed —
which also ends the episode).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

Message = dict[str, str]

PASS, FAIL = 1.0, -1.0


@dataclass
class StepResult:
    observation: list[Message]
    reward: float
    done: bool
    info: dict = field(default_factory=dict)


def finished(passed: bool, **info) -> StepResult:
    """The last step of an episode: +1 when the check passed, else -1."""
    return StepResult([], PASS if passed else FAIL, True, {"passed": passed, **info})


def malformed(reason: str, **info) -> StepResult:
    """Output the environment cannot use (no parsable value, a broken tool call): -1 and the episode ends."""
    return StepResult([], FAIL, True, {"passed": False, "malformed": reason, **info})


class Env(Protocol):
    name: str  # the environment family, e.g. "output_prediction"; metrics are grouped by it

    def reset(self) -> list[Message]:
        """Start the episode; returns the first messages (system prompt, task statement)."""

    def step(self, action: str) -> StepResult:
        """Apply one assistant turn."""

    def close(self) -> None:
        """Release what the episode holds (sandboxes, containers). Safe to call twice."""


class EnvFactory(Protocol):
    """Makes fresh environments for tasks. `make(i)` is the i-th task (cycling); every member of a GRPO group gets
    its own environment for the same task."""

    name: str

    def __len__(self) -> int: ...

    def make(self, index: int) -> Env: ...
