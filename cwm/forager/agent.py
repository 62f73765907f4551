"""The episode loop: a policy talks to a sandbox through four tools until it submits or runs out of budget.

The tool-call format (bash, edit, create, submit; one call per assistant turn) is `cwm/data/chat.py`'s, shared
with RL and mid-training; it is re-exported here.

A reply without exactly one well-formed call is a format error: the episode ends with reward -1. On submit
the task's hidden tests (if any) are written and the suite runs in the sandbox: reward +1 when every
fail-to-pass and pass-to-pass test passes, else -1.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from cwm.data.chat import (SYSTEM_PROMPT, TOOLS, FormatError, ToolCall, format_tool_call,  # noqa: F401
                           parse_tool_call)
from cwm.data.shards import record_key
from cwm.forager.sandbox import Sandbox, SandboxError
from cwm.forager.tasks import Task

SCHEMA = "cwm.trajectory/1"


@dataclass(frozen=True)
class EpisodeConfig:
    max_turns: int = 128
    max_tokens: int = 65536          # conversation length (prompt + reply of the last turn)
    wall_s: float = 1800.0
    bash_timeout_s: float = 120.0
    observation_chars: int = 8000    # longer observations keep their head and tail
    test_timeout_s: float = 900.0


def cut(text: str, budget: int) -> str:
    if len(text) <= budget:
        return text
    half = budget // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


def occurrences(text: str, search: str) -> int:
    """How often `search` occurs in `text`, overlapping matches included (str.count skips those)."""
    n, i = 0, text.find(search) if search else -1
    while i != -1:
        n, i = n + 1, text.find(search, i + 1)
    return n


def run_tool(sandbox: Sandbox, call: ToolCall, timeout_s: float) -> tuple[str, int | None, bool]:
    """(observation, exit code, timed out) of one bash/edit/create call."""
    a = call.args
    if call.tool == "bash":
        r = sandbox.exec(a["command"], timeout_s)
        status = "timed out" if r.timed_out else f"exit code {r.exit_code}"
        return f"[{status}]\n{r.output}", r.exit_code, r.timed_out
    if call.tool == "create":
        err = sandbox.write_file(a["path"], a["content"])
        return (f"error: {err}", 1, False) if err else (f"wrote {a['path']}", 0, False)
    text = sandbox.read_file(a["path"])
    if text is None:
        return f"error: cannot read {a['path']}", 1, False
    count = occurrences(text, a["search"])
    if count != 1:
        return f"error: the search text occurs {count} times in {a['path']}; it must occur exactly once", 1, False
    err = sandbox.write_file(a["path"], text.replace(a["search"], a["replace"], 1))
    return (f"error: {err}", 1, False) if err else (f"edited {a['path']}", 0, False)


def score(sandbox: Sandbox, task: Task, timeout_s: float) -> tuple[int, dict]:
    """+1 when every fail-to-pass and pass-to-pass test passes after the task's hidden tests are written."""
    for path, content in task.test_files.items():
        err = sandbox.write_file(path, content)
        if err:
            raise SandboxError(f"writing hidden test {path} failed: {err}")
    run = sandbox.run_tests(timeout_s=timeout_s)
    need = task.fail_to_pass + task.pass_to_pass
    failed = [t for t in need if run.outcomes.get(t) != "passed"]
    return (1 if not failed else -1), {"tests_failed": len(failed), "tests_required": len(need),
                                       "test_summary": run.summary}


def run_episode(task: Task, policy, open_sandbox: Callable[[Task], Sandbox],
                cfg: EpisodeConfig = EpisodeConfig()) -> dict:
    """One episode; returns its `cwm.trajectory/1` record. The sandbox is closed on every exit path."""
    t0 = time.monotonic()
    messages = [{"role": "system", "content": SYSTEM_PROMPT.format(timeout=cfg.bash_timeout_s), "tool": None},
                {"role": "user", "content": task.statement, "tool": None}]
    steps: list[dict] = []
    stats: dict = {"turns": 0, "tokens": 0}
    outcome, reward, patch = "step_limit", -1, ""
    sandbox = None
    try:
        sandbox = open_sandbox(task)
        stats["sandbox"] = sandbox.isolation
        stats["sandbox_start_s"] = round(time.monotonic() - t0, 3)
        sandbox.begin(task.start_files)
        policy.start(task)
        while True:
            if stats["turns"] >= cfg.max_turns:
                outcome = "step_limit"
                break
            if time.monotonic() - t0 > cfg.wall_s:
                outcome = "timeout"
                break
            reply = policy.act([{"role": m["role"], "content": m["content"]} for m in messages])
            stats["turns"] += 1
            stats["tokens"] = reply.tokens
            messages.append({"role": "assistant", "content": reply.text, "tool": None})
            if reply.tokens > cfg.max_tokens:
                outcome = "token_limit"
                break
            try:
                call = parse_tool_call(reply.text)
            except FormatError as exc:
                outcome = "format_error"
                stats["format_error"] = str(exc)
                break
            if call.tool == "submit":
                steps.append({"tool": "submit", "args": {}, "observation": "", "exit_code": None,
                              "seconds": 0.0, "timed_out": False})
                patch = sandbox.patch()
                t1 = time.monotonic()
                reward, test_stats = score(sandbox, task, cfg.test_timeout_s)
                stats.update(test_stats, test_seconds=round(time.monotonic() - t1, 3))
                outcome = "submitted"
                break
            remaining = cfg.wall_s - (time.monotonic() - t0)
            t1 = time.monotonic()
            observation, code, timed_out = run_tool(sandbox, call, max(1.0, min(cfg.bash_timeout_s, remaining)))
            observation = cut(observation, cfg.observation_chars)
            steps.append({"tool": call.tool, "args": call.args, "observation": observation, "exit_code": code,
                          "seconds": round(time.monotonic() - t1, 4), "timed_out": timed_out})
            messages.append({"role": "tool", "content": observation, "tool": call.tool})
        if outcome != "submitted":
            patch = sandbox.patch()
    except SandboxError as exc:
        outcome, reward = "sandbox_error", -1
        stats["error"] = str(exc)[-1000:]
    finally:
        if sandbox is not None:
            sandbox.close()
    stats["wall_s"] = round(time.monotonic() - t0, 3)
    stats["actions"] = sum(1 for s in steps if s["tool"] != "submit")
    record = {"schema": SCHEMA, "task": task.public(), "policy": {"kind": policy.kind, "model": policy.model},
              "messages": messages, "steps": steps, "patch": patch, "reward": reward, "outcome": outcome,
              "stats": stats}
    record["id"] = record_key({"task": task.id, "policy": record["policy"], "messages": messages})
    return record

