"""Software engineering: a ForagerAgent task (DESIGN §4) as a multi-turn environment.

The episode is the forager's (`cwm/forager/agent.py`) turned inside out — the rollout loop, not a policy object,
supplies each assistant turn — and reuses its pieces: the system prompt and text tool-call format, `run_tool`
for bash/edit/create inside the task's sandbox (a fresh Docker container per episode), and `score` on submit
(+1 when every fail-to-pass and pass-to-pass test passes). A reply that is not exactly one well-formed tool call
is -1 and ends the episode. A sandbox failure also ends it, flagged `sandbox_error` so the learner can leave
the trajectory out (the policy did nothing wrong).
"""
from __future__ import annotations

from typing import Callable

from cwm.data.chat import SYSTEM_PROMPT, FormatError, parse_tool_call
from cwm.forager.agent import EpisodeConfig, cut, run_tool, score
from cwm.forager.sandbox import Sandbox, SandboxError
from cwm.forager.tasks import Task
from cwm.rl.env import FAIL, Message, StepResult, finished, malformed


class SWEEnv:
    name = "swe"

    def __init__(self, task: Task, open_sandbox: Callable[[Task], Sandbox], cfg: EpisodeConfig):
        self.task = task
        self.open_sandbox = open_sandbox
        self.cfg = cfg
        self.sandbox: Sandbox | None = None
        self.error: str | None = None
        self.turns = 0

    def reset(self) -> list[Message]:
        try:
            self.sandbox = self.open_sandbox(self.task)
            self.sandbox.begin(self.task.start_files)
        except SandboxError as e:
            self.error = str(e)[-500:]
        return [{"role": "system", "content": SYSTEM_PROMPT.format(timeout=self.cfg.bash_timeout_s)},
                {"role": "user", "content": self.task.statement}]

    def step(self, action: str) -> StepResult:
        if self.error is not None:
            return self._sandbox_error(self.error)
        self.turns += 1
        try:
            call = parse_tool_call(action)
        except FormatError as e:
            return malformed(f"format_error: {e}", turns=self.turns)
        try:
            if call.tool == "submit":
                reward, stats = score(self.sandbox, self.task, self.cfg.test_timeout_s)
                return finished(reward > 0, outcome="submitted", turns=self.turns, **stats)
            observation, _, _ = run_tool(self.sandbox, call, self.cfg.bash_timeout_s)
        except SandboxError as e:
            return self._sandbox_error(str(e)[-500:])
        if self.turns >= self.cfg.max_turns:
            return StepResult([], FAIL, True, {"passed": False, "outcome": "step_limit", "turns": self.turns})
        return StepResult([{"role": "tool", "content": cut(observation, self.cfg.observation_chars)}], 0.0, False)

    def _sandbox_error(self, message: str) -> StepResult:
        return StepResult([], FAIL, True, {"passed": False, "outcome": "sandbox_error", "error": message})

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None


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
