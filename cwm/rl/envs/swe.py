"""Software engineering: a ForagerAgent task (DESIGN §4) as a multi-turn environment.

The episode is the forager's own state machine (`cwm/forager/episode.py`), with the rollout loop — not a policy
object — supplying each assistant turn: the same system prompt and text tool-call format, the same tools in the
task's sandbox (a fresh Docker container per episode), the same grader on submit (`cwm/forager/grading.py`: test
files restored, explicit test list; +1 when every fail-to-pass and pass-to-pass test passes). A reply that is not
exactly one well-formed tool call is -1 and ends the episode. A sandbox failure also ends it, flagged
`sandbox_error` so the learner can leave the trajectory out (the policy did nothing wrong).
"""
from __future__ import annotations

from typing import Callable

from cwm.forager.episode import Episode, EpisodeConfig, EpisodeEnd
from cwm.forager.sandbox import Sandbox
from cwm.forager.tasks import Task
from cwm.rl.env import Message, StepResult


class SWEEnv:
    name = "swe"

    def __init__(self, task: Task, open_sandbox: Callable[[Task], Sandbox], cfg: EpisodeConfig):
        self.task = task
        self.episode = Episode(task, open_sandbox, cfg)
        self.ended: EpisodeEnd | None = None

    @property
    def turns(self) -> int:
        return self.episode.stats["turns"]

    def reset(self) -> list[Message]:
        try:
            self.episode.start()
        except EpisodeEnd as end:  # sandbox_error: reported at the first step
            self.ended = end
        return [{"role": m["role"], "content": m["content"]} for m in self.episode.messages]

    def step(self, action: str) -> StepResult:
        if self.ended is not None:
            return self._finished(self.ended)
        try:
            observation = self.episode.step(action)
        except EpisodeEnd as end:
            return self._finished(end)
        return StepResult([{"role": "tool", "content": observation}], 0.0, False)

    def _finished(self, end: EpisodeEnd) -> StepResult:
        stats = self.episode.stats
        info = {"passed": end.outcome == "submitted" and end.reward == 1.0, "outcome": end.outcome,
                "turns": stats["turns"]}
        for key in ("tests_failed", "tests_required", "test_summary", "restored", "removed", "tampering",
                    "reward_terms", "error"):
            if key in stats:
                info[key] = stats[key]
        if end.outcome == "format_error":
            info["malformed"] = f"format_error: {end.detail}"
        return StepResult([], end.reward, True, info)

    def close(self) -> None:
        self.episode.close()


class SWETasks:
    """EnvFactory over forager tasks (`cwm-forager tasks ... -o FILE`), each episode in a fresh sandbox."""

    name = SWEEnv.name

    def __init__(self, tasks: list[Task], open_sandbox: Callable[[Task], Sandbox], cfg: EpisodeConfig):
        if not tasks:
            raise ValueError("no software-engineering tasks given")
        self.tasks = tasks
        self.open_sandbox = open_sandbox
        self.cfg = cfg

    @classmethod
    def from_spec(cls, spec) -> "SWETasks":
        """From a recipe's EnvSpec: `tasks` is a forager task file; Docker containers with SandboxLimits' defaults."""
        from cwm.forager import images
        from cwm.forager.sandbox import open_sandbox, sweep_containers
        from cwm.forager.tasks import load_tasks
        from cwm.rl.recipe import RecipeError

        if not spec.tasks:
            raise RecipeError("env swe: set `tasks:` to a forager task file (cwm-forager tasks IMAGE -o FILE)")
        tasks = load_tasks(spec.tasks)[:spec.limit]
        try:
            dc = images.client()
        except images.ImageError as e:
            raise RecipeError(f"env swe: needs a Docker engine ({e}); start one or drop the swe env") from None
        sweep_containers(dc)
        cfg = EpisodeConfig(max_turns=spec.max_steps, bash_timeout_s=spec.timeout_s)
        return cls(tasks, lambda task: open_sandbox("docker", image=task.image, dc=dc), cfg)

    def __len__(self) -> int:
        return len(self.tasks)

    def make(self, index: int) -> SWEEnv:
        return SWEEnv(self.tasks[index % len(self.tasks)], self.open_sandbox, self.cfg)
