"""The episode loop: a policy talks to a sandbox through four tools until it submits or runs out of budget.

The tool-call format (bash, edit, create, submit; one call per assistant turn) is `cwm/data/chat.py`'s, shared
with RL and mid-training; it is re-exported here.

The episode itself is `cwm/forager/episode.py`'s state machine (shared with RL); this module holds the tools
and the policy-driven loop. A reply without exactly one well-formed call is a format error: the episode ends
with reward -1. On submit `cwm/forager/grading.py` restores the task's test files and runs its explicit test
list: reward +1 when every fail-to-pass and pass-to-pass test passes, else -1.
"""
from __future__ import annotations

import time
from typing import Callable

from cwm.data.chat import (SYSTEM_PROMPT, TOOLS, FormatError, ToolCall, format_tool_call,  # noqa: F401
                           parse_tool_call)
from cwm.forager.episode import (SCHEMA, ContextOverflow, Episode, EpisodeConfig, EpisodeEnd,  # noqa: F401
                                 PolicyError, cut)
from cwm.forager.sandbox import Sandbox
from cwm.forager.tasks import Task


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


def run_episode(task: Task, policy, open_sandbox: Callable[[Task], Sandbox],
                cfg: EpisodeConfig = EpisodeConfig(), *, save_path=None) -> dict:
    """One episode (`episode.Episode`) driven by `policy`; returns its `cwm.trajectory/1` record. The sandbox is
    closed on every exit path. A policy that fails (its server errors, the context overflows) ends the episode
    with outcome policy_error or token_limit; nothing is raised for it."""
    episode = Episode(task, open_sandbox, cfg, policy={"kind": policy.kind, "model": policy.model},
                      save_path=save_path)
    try:
        episode.start()
        policy.start(task)
        while True:
            if time.monotonic() - episode.t0 > cfg.wall_s:
                episode.fail("timeout")
            try:
                reply = policy.act(episode.chat())
            except ContextOverflow as exc:
                episode.fail("token_limit", str(exc)[-500:])
            except PolicyError as exc:
                episode.fail("policy_error", str(exc)[-500:])
            episode.step(reply.text, reply.tokens)
    except EpisodeEnd:
        pass
    finally:
        episode.close()
    return episode.record()
