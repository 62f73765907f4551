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
import re
import shlex
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from cwm.forager.agent import ToolCall, format_tool_call, occurrences
from cwm.forager.episode import ContextOverflow, PolicyError
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
        """The plan's step for this point of the conversation (one per assistant turn so far): a function of the
        conversation, as a model is, so a tree search may ask for any node's turn in any order."""
        done = sum(m["role"] == "assistant" for m in messages)
        text = "I know the fix; applying it.\n" + format_tool_call(self._plan[min(done, len(self._plan) - 1)])
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
    server-side tool support).

    The reply budget fits the server: its context length is read once from `/v1/models` (vLLM reports
    `max_model_len`), each request asks for min(`max_reply_tokens`, context - prompt tokens) — the prompt counted
    by the server's `/tokenize` where it has one, else estimated — and a conversation with no room left raises
    ContextOverflow. A 400 that says the context is exceeded is a ContextOverflow too; any other failure, after
    `retries` for the transient ones (5xx, connection errors), is a PolicyError. The episode turns both into an
    outcome (`token_limit`, `policy_error`) and collection goes on."""
    kind = "openai"

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, temperature: float = 0.0,
                 max_reply_tokens: int | None = None, timeout_s: float = 300.0, retries: int = 3,
                 min_reply_tokens: int = 16):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY", "EMPTY")
        self.temperature, self.max_reply_tokens = temperature, max_reply_tokens
        self.timeout_s, self.retries, self.min_reply_tokens = timeout_s, retries, min_reply_tokens
        self._context: int | None | bool = False    # False: not asked yet; None: the server does not say
        self._tokenize = True

    def context_length(self) -> int | None:
        """The served model's context length from `/v1/models` (None when the server does not report it)."""
        if self._context is False:
            self._context = None
            try:
                data = self._request("GET", "/models", None).get("data") or []
            except PolicyError:
                data = []
            for card in data:
                if card.get("id") == self.model or len(data) == 1:
                    length = card.get("max_model_len") or card.get("context_length")
                    self._context = int(length) if length else None
                    break
        return self._context

    def _prompt_tokens(self, messages: list[dict]) -> int:
        if self._tokenize:
            root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
            try:
                reply = self._request("POST", "/tokenize", {"model": self.model, "messages": messages,
                                                            "add_generation_prompt": True}, root=root, retries=0)
                return int(reply["count"])
            except (PolicyError, KeyError, TypeError, ValueError):
                self._tokenize = False   # no such route: estimate from now on
        return _estimate_tokens(messages, "") + 8 * len(messages)

    def reply_budget(self, messages: list[dict]) -> int:
        """max_tokens for the next request; ContextOverflow when the conversation leaves too little room."""
        context = self.context_length()
        want = self.max_reply_tokens or (context // 4 if context else 2048)
        if context is None:
            return want
        room = context - self._prompt_tokens(messages)
        if room < self.min_reply_tokens:
            raise ContextOverflow(f"the conversation needs {context - room} of the server's {context} context "
                                  f"tokens; no room for a reply")
        return min(want, room)

    def act(self, messages):
        chat = [{"role": "user" if m["role"] == "tool" else m["role"], "content": m["content"]} for m in messages]
        body = {"model": self.model, "temperature": self.temperature, "max_tokens": self.reply_budget(chat),
                "messages": chat}
        data = self._request("POST", "/chat/completions", body)
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise PolicyError(f"{self.base_url}: unexpected chat completion response {str(data)[:300]}") from None
        usage = data.get("usage") or {}
        tokens = usage.get("total_tokens") or _estimate_tokens(messages, text)
        return Reply(text, int(tokens))

    def _request(self, method: str, path: str, body: dict | None, *, root: str | None = None,
                 retries: int | None = None) -> dict:
        url = (root or self.base_url) + path
        req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     method=method, headers={"Content-Type": "application/json",
                                                             "Authorization": f"Bearer {self.api_key}"})
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:500].decode(errors="replace")
                if exc.code == 400 and _CONTEXT_ERROR.search(detail):
                    raise ContextOverflow(f"{url}: HTTP 400: {detail[:300]}") from None
                if exc.code < 500 or attempt == retries:
                    raise PolicyError(f"{url}: HTTP {exc.code}: {detail[:300]}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as exc:
                if attempt == retries:
                    raise PolicyError(f"{url}: unreachable or unreadable ({exc})") from None
            time.sleep(min(2 ** attempt, 10))
        raise AssertionError("unreachable")


# how OpenAI-compatible servers (vLLM, SGLang, OpenAI) say a request does not fit the context
_CONTEXT_ERROR = re.compile(r"maximum context length|context length|context_length_exceeded|max_model_len|"
                            r"too many tokens|prompt is too long", re.I)


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
        from cwm.data.documents import chat_prompt_segments, prompt_ids

        # `prompt_text(messages)` tokenized as training tokenizes a trajectory: the chat scaffolding special, every
        # message's content (a tool's output, a file) ordinary, so no content forges a turn
        ids = torch.tensor([prompt_ids(self.tokenizer, chat_prompt_segments(messages), bos=False)], device=self.device)
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
