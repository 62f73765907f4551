"""The chat and tool-call format every stage shares: how a conversation is rendered into a training document or a
prompt, and how an agent's tool calls are written as text.

## Rendering

Each message becomes `<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>` (Llama-3 / CWM
style, `cwm.data.special_tokens`). A `tool` turn is an observation — the environment wrote it, not the model —
so its whole turn, header included, is flagged and can be dropped from the loss. The tokenizer adds BOS/EOS.
Policies render their prompts with the same function (`prompt_text`), so training and acting see one format.

## Tool calls

One tool call per assistant turn, written as text (so any chat model can produce it, and so it is what the
model learns in mid-training). The format, also given to the model in the system prompt:

    <tool: bash>
    COMMAND
    </tool>

    <tool: edit>
    PATH
    <<<<<<< SEARCH
    EXACT LINES TO FIND (must occur exactly once)
    =======
    REPLACEMENT LINES
    >>>>>>> REPLACE
    </tool>

    <tool: create>
    PATH
    FILE CONTENT
    </tool>

    <tool: submit>
    </tool>

A reply without exactly one well-formed call is a format error (`FormatError`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from cwm.data.special_tokens import END_HEADER, EOT, START_HEADER, chat_header


def message_segments(messages: list[dict]) -> list[tuple[str, bool]]:
    """(text, is_observation) pieces of a list of chat messages, neighbours with the same flag merged."""
    pieces: list[tuple[str, bool]] = []
    for m in messages:
        text = f"{chat_header(m['role'])}{m['content']}{EOT}"
        obs = m["role"] == "tool"
        if pieces and pieces[-1][1] == obs:
            pieces[-1] = (pieces[-1][0] + text, obs)
        else:
            pieces.append((text, obs))
    return pieces


def trajectory_segments(record: dict) -> list[tuple[str, bool]]:
    """The chat-formatted document of a `cwm.trajectory/1` record as (text, is_observation) pieces."""
    return message_segments(record["messages"])


# The same rendering as a Jinja chat template, for servers that apply one (vLLM's /v1/chat/completions refuses a
# model without it): set `tokenizer.chat_template = CHAT_TEMPLATE` before saving a model that is to be served.
# BOS first, as ChatFormat.encode puts it; tests check it renders exactly `prompt_text`.
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}" + START_HEADER + "{{ m['role'] }}" + END_HEADER +
                 "\n\n{{ m['content'] }}" + EOT + "{% endfor %}{% if add_generation_prompt %}" + START_HEADER +
                 "assistant" + END_HEADER + "\n\n{% endif %}")


def prompt_text(messages: list[dict]) -> str:
    """What a model continues to write its next turn: the conversation, then an open assistant header."""
    return "".join(text for text, _ in message_segments(messages)) + chat_header("assistant")


TOOLS = ("bash", "edit", "create", "submit")
_CALL = re.compile(r"<tool:\s*(\w+)\s*>")
_EDIT = re.compile(r"<<<<<<< SEARCH\n(.*?)^=======\n(.*?)^>>>>>>> REPLACE[ \t]*$", re.S | re.M)

SYSTEM_PROMPT = """You are a software engineer fixing a bug in the repository at /repo (your working directory).
Each reply: think briefly, then make exactly one tool call. Tools:

<tool: bash>
COMMAND
</tool>
runs COMMAND with bash in /repo (a fresh shell each time; it is killed after {timeout:g}s; no network).

<tool: edit>
PATH
<<<<<<< SEARCH
EXACT LINES TO FIND (must occur exactly once in the file)
=======
REPLACEMENT LINES
>>>>>>> REPLACE
</tool>
replaces the search lines with the replacement lines.

<tool: create>
PATH
FILE CONTENT
</tool>
writes a file (creating or replacing it).

<tool: submit>
</tool>
ends the episode; your change is then tested.
"""


class FormatError(ValueError):
    """The assistant turn is not exactly one well-formed tool call."""


@dataclass
class ToolCall:
    tool: str
    args: dict


def parse_tool_call(text: str) -> ToolCall:
    """The one tool call in an assistant turn (see the module docstring), or FormatError saying what is wrong."""
    opens = list(_CALL.finditer(text))
    if len(opens) != 1:
        raise FormatError(f"expected exactly one tool call, found {len(opens)}")
    tool = opens[0].group(1)
    if tool not in TOOLS:
        raise FormatError(f"unknown tool {tool!r}; the tools are {', '.join(TOOLS)}")
    close = text.rfind("</tool>")
    if close < opens[0].end():
        raise FormatError(f"the {tool} call is not closed with </tool>")
    body = text[opens[0].end():close]
    body = body[1:] if body.startswith("\n") else body
    if tool == "submit":
        return ToolCall("submit", {})
    if tool == "bash":
        command = body.rstrip("\n")
        if not command.strip():
            raise FormatError("empty bash command")
        return ToolCall("bash", {"command": command})
    path, _, rest = body.partition("\n")
    path = path.strip()
    if not path:
        raise FormatError(f"{tool}: the first line must be the file path")
    if tool == "create":
        return ToolCall("create", {"path": path, "content": rest})
    m = _EDIT.search(rest)
    if not m:
        raise FormatError("edit: expected <<<<<<< SEARCH / ======= / >>>>>>> REPLACE blocks after the path")
    return ToolCall("edit", {"path": path, "search": m.group(1), "replace": m.group(2)})


def format_tool_call(call: ToolCall) -> str:
    """The text of a tool call (the inverse of parse_tool_call); scripted policies write through it."""
    a = call.args
    if call.tool == "submit":
        return "<tool: submit>\n</tool>"
    if call.tool == "bash":
        return f"<tool: bash>\n{a['command']}\n</tool>"
    if call.tool == "create":
        return f"<tool: create>\n{a['path']}\n{a['content']}</tool>"
    return (f"<tool: edit>\n{a['path']}\n<<<<<<< SEARCH\n{a['search']}=======\n{a['replace']}"
            f">>>>>>> REPLACE\n</tool>")
