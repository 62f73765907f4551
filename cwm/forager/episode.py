"""One SWE episode as a state machine, used by forager collection (`agent.run_episode`) and RL (`rl/envs/swe.py`).

mini-swe-agent's shape: `step(reply)` = observe(act): the reply is parsed into one tool call, the tool runs in
the sandbox, and the observation comes back for the next turn. The end of the episode is an exception,
`EpisodeEnd`, carrying its outcome and reward: `submitted` (graded by `grading.grade`), `format_error`,
`step_limit`, `timeout`, `token_limit`, `policy_error` (the policy or its server failed: a context overflow, an
HTTP error), `sandbox_error`. The record (`cwm.trajectory/1`, DESIGN §4) is rebuilt after every step and, when a
`save_path` is given, written there atomically: a crashed collector leaves every finished step on disk.

Limits: `max_turns` assistant turns, `wall_s` for the whole episode (checked before each turn, and a command
never gets more than what is left), `max_tokens` of conversation.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cwm.data.chat import SYSTEM_PROMPT, FormatError, parse_tool_call
from cwm.data.shards import record_key
from cwm.forager.sandbox import Sandbox, SandboxError

SCHEMA = "cwm.trajectory/1"
OUTCOMES = ("submitted", "step_limit", "token_limit", "timeout", "format_error", "sandbox_error", "policy_error")


@dataclass(frozen=True)
class EpisodeConfig:
    max_turns: int = 128
    max_tokens: int = 65536          # conversation length (prompt + reply of the last turn)
    wall_s: float = 1800.0
    bash_timeout_s: float = 120.0
    observation_chars: int = 8000    # longer observations keep their head and tail
    test_timeout_s: float = 900.0
    flaky_credit: float | None = None  # reward when only known-flaky tests fail, still after re-runs (None: -1)
    flaky_reruns: int = 2


class EpisodeEnd(Exception):
    """The episode is over: `outcome` (one of OUTCOMES) and `reward`."""

    def __init__(self, outcome: str, reward: float, detail: str = ""):
        super().__init__(f"{outcome}: {detail}" if detail else outcome)
        self.outcome, self.reward, self.detail = outcome, reward, detail


class PolicyError(RuntimeError):
    """The policy could not produce a turn (its server failed or refused the request)."""


class ContextOverflow(PolicyError):
    """The conversation no longer fits the policy's context window."""


def cut(text: str, budget: int) -> str:
    if len(text) <= budget:
        return text
    half = budget // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


class Episode:
    """The state of one episode on one task. `start()`, then `step(reply)` until it raises EpisodeEnd."""

    def __init__(self, task, open_sandbox: Callable, cfg: EpisodeConfig = EpisodeConfig(), *,
                 policy: dict | None = None, save_path: str | os.PathLike | None = None):
        self.task, self.open_sandbox, self.cfg = task, open_sandbox, cfg
        self.policy = policy or {"kind": "rl", "model": ""}
        self.save_path = Path(save_path) if save_path else None
        self.messages = [{"role": "system", "content": SYSTEM_PROMPT.format(timeout=cfg.bash_timeout_s), "tool": None},
                         {"role": "user", "content": task.statement, "tool": None}]
        self.steps: list[dict] = []
        self.stats: dict = {"turns": 0, "tokens": 0}
        self.outcome: str | None = None
        self.reward: float = -1.0
        self.patch = ""
        self.sandbox: Sandbox | None = None
        self.t0 = time.monotonic()

    # -------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> list[dict]:
        """Open the sandbox and put the task's files in place; returns the first messages. A sandbox failure
        ends the episode at once (EpisodeEnd sandbox_error)."""
        try:
            self.sandbox = self.open_sandbox(self.task)
            self.stats["sandbox"] = self.sandbox.isolation
            self.stats["sandbox_start_s"] = round(time.monotonic() - self.t0, 3)
            self.sandbox.begin(self.task.start_files)
        except SandboxError as exc:
            self._end("sandbox_error", -1.0, str(exc)[-1000:])
        self._save()
        return [{"role": m["role"], "content": m["content"]} for m in self.messages]

    def chat(self) -> list[dict]:
        """The conversation as a policy sees it."""
        return [{"role": m["role"], "content": m["content"]} for m in self.messages]

    def step(self, reply: str, tokens: int | None = None) -> str:
        """Apply one assistant turn; returns the observation, or raises EpisodeEnd."""
        if self.outcome is not None:
            raise EpisodeEnd(self.outcome, self.reward, "the episode is already over")
        self.stats["turns"] += 1
        if tokens is not None:
            self.stats["tokens"] = tokens
        self.messages.append({"role": "assistant", "content": reply, "tool": None})
        try:
            if tokens is not None and tokens > self.cfg.max_tokens:
                self._end("token_limit", -1.0)
            try:
                call = parse_tool_call(reply)
            except FormatError as exc:
                self.stats["format_error"] = str(exc)
                self._end("format_error", -1.0, str(exc))
            if call.tool == "submit":
                self.steps.append({"tool": "submit", "args": {}, "observation": "", "exit_code": None,
                                   "seconds": 0.0, "timed_out": False})
                self._submit()
            observation = self._run(call)
            if self.stats["turns"] >= self.cfg.max_turns:
                self._end("step_limit", -1.0)
            if time.monotonic() - self.t0 > self.cfg.wall_s:
                self._end("timeout", -1.0)
            return observation
        except SandboxError as exc:
            self._end("sandbox_error", -1.0, str(exc)[-1000:])
        finally:
            self._save()

    def fail(self, outcome: str, detail: str = "") -> None:
        """End the episode from outside (the policy failed: policy_error, token_limit); raises EpisodeEnd."""
        try:
            self._end(outcome, -1.0, detail)
        finally:
            self._save()

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None

    # -------------------------------------------------------------------------------------------- internals
    def _run(self, call) -> str:
        from cwm.forager.agent import run_tool

        remaining = self.cfg.wall_s - (time.monotonic() - self.t0)
        t1 = time.monotonic()
        observation, code, timed_out = run_tool(self.sandbox, call, max(1.0, min(self.cfg.bash_timeout_s, remaining)))
        observation = cut(observation, self.cfg.observation_chars)
        self.steps.append({"tool": call.tool, "args": call.args, "observation": observation, "exit_code": code,
                           "seconds": round(time.monotonic() - t1, 4), "timed_out": timed_out})
        self.messages.append({"role": "tool", "content": observation, "tool": call.tool})
        return observation

    def _submit(self) -> None:
        from cwm.forager.grading import grade

        self.patch = self.sandbox.patch()
        t1 = time.monotonic()
        result = grade(self.sandbox, self.task, self.cfg.test_timeout_s,
                       flaky=set(getattr(self.task, "flaky", ()) or ()), flaky_credit=self.cfg.flaky_credit,
                       reruns=self.cfg.flaky_reruns, patch=self.patch)
        components = result.pop("components")
        self.stats.update(result, test_seconds=round(time.monotonic() - t1, 3), reward_terms=components)
        self._end("submitted", components["tests"])

    def _end(self, outcome: str, reward: float, detail: str = "") -> None:
        self.outcome, self.reward = outcome, reward
        if detail:
            self.stats.setdefault("error", detail)
        if outcome not in ("submitted", "sandbox_error") and self.sandbox is not None:
            try:
                self.patch = self.sandbox.patch()
            except SandboxError:
                pass
        raise EpisodeEnd(outcome, reward, detail)

    def record(self) -> dict:
        """The `cwm.trajectory/1` record of the episode so far (outcome null while it runs)."""
        stats = dict(self.stats, wall_s=round(time.monotonic() - self.t0, 3),
                     actions=sum(1 for s in self.steps if s["tool"] != "submit"))
        record = {"schema": SCHEMA, "task": self.task.public(), "policy": self.policy, "messages": self.messages,
                  "steps": self.steps, "patch": self.patch, "outcome": self.outcome,
                  "reward": int(self.reward) if self.reward in (1.0, -1.0) else self.reward,
                  "stats": stats}
        record["id"] = record_key({"task": self.task.id, "policy": self.policy, "messages": self.messages})
        return record

    def _save(self) -> None:
        if self.save_path is None:
            return
        tmp = self.save_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.record()))
        tmp.replace(self.save_path)
