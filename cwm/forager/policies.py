"""Policies: what writes the assistant turns of an episode.

- `openai`: any OpenAI-compatible `/v1/chat/completions` server (vLLM, SGLang, ...).
- `hf`: a local `transformers` causal LM, prompted with the same chat rendering used for training.
- `oracle`: replays the task's known fix through the tools (run the failing test, edit, submit); reward +1.
- `noop`: submits at once; reward -1 (the floor).

A policy gets the conversation as `[{"role", "content"}]` (roles system/user/assistant/tool) and returns a Reply.
"""
from __future__ import annotations

import abc

import difflib
import json
import os
import shlex
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from cwm.forager.agent import ToolCall, format_tool_call, occurrences
from cwm.data.chat import prompt_text
from cwm.forager.tasks import Task


@dataclass
class Reply:
    text: str
    tokens: int   # conversation length after this reply (prompt + completion), for the token limit


def _estimate_tokens(messages: list[dict], text: str) -> int:
    return (sum(len(m["content"]) for m in messages) + len(text)) // 4


class Policy(abc.ABC):
    kind = "base"
    model = ""

    def start(self, task: Task) -> None:
        """Called once before the first turn of an episode on `task`."""

    @abc.abstractmethod
    def act(self, messages: list[dict]) -> Reply:
        """The assistant's next turn, given the conversation so far."""


class NoopPolicy(Policy):
    kind, model = "noop", "noop"

    def act(self, messages):
        text = format_tool_call(ToolCall("submit", {}))
        return Reply(text, _estimate_tokens(messages, text))


class OraclePolicy(Policy):
    """Runs the first failing test, applies the known fix as minimal unique edits, submits."""
    kind, model = "oracle", "oracle"

    def start(self, task: Task) -> None:
        plan = []
        if task.fail_to_pass:
            plan.append(ToolCall("bash", {"command": "python -m pytest -q -x -p no:cacheprovider " +
                                          shlex.quote(task.fail_to_pass[0])}))
        for path, fixed in task.fix_files.items():
            current = task.start_files.get(path)
            if fixed is None:
                plan.append(ToolCall("bash", {"command": f"rm -f -- {shlex.quote(path)}"}))
            elif current is None or not current.endswith("\n") or not fixed.endswith("\n"):
                plan.append(ToolCall("create", {"path": path, "content": fixed}))
            elif current != fixed:
                search, replace = minimal_edit(current, fixed)
                plan.append(ToolCall("edit", {"path": path, "search": search, "replace": replace}))
        plan.append(ToolCall("submit", {}))
        self._plan = plan

    def act(self, messages):
        text = "I know the fix; applying it.\n" + format_tool_call(self._plan.pop(0))
        return Reply(text, _estimate_tokens(messages, text))


def minimal_edit(old: str, new: str) -> tuple[str, str]:
    """(search, replace) lines turning `old` into `new`: the changed region, widened until the search text
    occurs exactly once in `old`."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    ops = [op for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes() if op[0] != "equal"]
    i1, i2, j1, j2 = ops[0][1], ops[-1][2], ops[0][3], ops[-1][4]
    while True:
        search = "".join(a[i1:i2])
        if occurrences(old, search) == 1:
            return search, "".join(b[j1:j2])
        if i1 > 0:
            i1, j1 = i1 - 1, j1 - 1
        if i2 < len(a):
            i2, j2 = i2 + 1, j2 + 1


class OpenAIPolicy(Policy):
    """A chat-completions endpoint. Tool observations go back as user turns (the text tool format needs no
    server-side tool support)."""
    kind = "openai"

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, temperature: float = 0.0,
                 max_reply_tokens: int = 2048, timeout_s: float = 300.0, retries: int = 3):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY", "EMPTY")
        self.temperature, self.max_reply_tokens = temperature, max_reply_tokens
        self.timeout_s, self.retries = timeout_s, retries

    def act(self, messages):
        body = {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_reply_tokens,
                "messages": [{"role": "user" if m["role"] == "tool" else m["role"],
                              "content": m["content"]} for m in messages]}
        data = self._post("/chat/completions", body)
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise RuntimeError(f"{self.base_url}: unexpected chat completion response {str(data)[:300]}") from exc
        usage = data.get("usage") or {}
        tokens = usage.get("total_tokens") or _estimate_tokens(messages, text)
        return Reply(text, int(tokens))

    def _post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.base_url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {self.api_key}"})
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or attempt == self.retries:
                    raise RuntimeError(f"{self.base_url}{path}: HTTP {exc.code}: {exc.read()[:300]!r}") from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == self.retries:
                    raise RuntimeError(f"{self.base_url}{path}: unreachable ({exc})") from exc
            time.sleep(min(2 ** attempt, 10))
        raise AssertionError("unreachable")


class HFPolicy(Policy):
    """A local `transformers` model (a path or an already loaded model + tokenizer), greedy or sampled."""
    kind = "hf"

    def __init__(self, model, tokenizer=None, *, max_new_tokens: int = 512, temperature: float = 0.0,
                 device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        if isinstance(model, (str, os.PathLike)):
            self.model = str(model)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model)
        else:
            self.model = getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.net = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        from cwm.data.special_tokens import EOT
        eot = tokenizer.convert_tokens_to_ids(EOT)
        self.stop_ids = [i for i in (eot, tokenizer.eos_token_id) if isinstance(i, int) and i >= 0]

    def act(self, messages):
        import torch
        ids = self.tokenizer(prompt_text(messages), add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = ids.to(self.device)
        with torch.no_grad():
            out = self.net.generate(ids, max_new_tokens=self.max_new_tokens, do_sample=self.temperature > 0,
                                    temperature=self.temperature or None, eos_token_id=self.stop_ids or None,
                                    pad_token_id=self.tokenizer.pad_token_id or (self.stop_ids or [0])[0])
        new = out[0, ids.shape[1]:]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Reply(text, int(out.shape[1]))


def make_policy(spec: str, *, model: str | None = None, base_url: str | None = None, **kw) -> Policy:
    """A policy from CLI words: noop, oracle, openai (needs --base-url and --model), hf (needs --model)."""
    if spec == "noop":
        return NoopPolicy()
    if spec == "oracle":
        return OraclePolicy()
    if spec == "openai":
        if not base_url or not model:
            raise ValueError("--policy openai needs --base-url URL (ending in /v1) and --model NAME")
        return OpenAIPolicy(base_url, model, **kw)
    if spec == "hf":
        if not model:
            raise ValueError("--policy hf needs --model PATH (a local transformers checkpoint)")
        return HFPolicy(model, **kw)
    raise ValueError(f"unknown policy {spec!r}: use noop, oracle, openai or hf")
