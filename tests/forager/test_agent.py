"""Tool-call format, oracle edits, rendering and the model policies (no sandbox needed)."""
from __future__ import annotations

import random

import pytest

from cwm.data.special_tokens import EOT, chat_header
from cwm.forager.agent import FormatError, ToolCall, cut, format_tool_call, occurrences, parse_tool_call
from cwm.forager.policies import OpenAIPolicy, minimal_edit
from cwm.data.chat import prompt_text, trajectory_segments

CALLS = [
    ToolCall("bash", {"command": "ls -la && python -m pytest -q tests/test_x.py::test_a"}),
    ToolCall("bash", {"command": "cat <<'EOF' > f.txt\n</tool>\nEOF"}),
    ToolCall("edit", {"path": "pkg/mod.py", "search": "    return a - b\n", "replace": "    return a + b\n"}),
    ToolCall("edit", {"path": "a b.py", "search": "x = 1\ny = 2\n", "replace": ""}),
    ToolCall("create", {"path": "new/file.py", "content": "def f():\n    return '</tool>'\n"}),
    ToolCall("submit", {}),
]


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.tool)
def test_format_and_parse_round_trip(call):
    text = "Let me look.\n" + format_tool_call(call) + "\n"
    assert parse_tool_call(text) == call


@pytest.mark.parametrize("text, message", [
    ("I think the bug is in add().", "found 0"),
    ("<tool: bash>\nls\n</tool>\n<tool: submit>\n</tool>", "found 2"),
    ("<tool: rm>\nx\n</tool>", "unknown tool"),
    ("<tool: bash>\nls\n", "not closed"),
    ("<tool: bash>\n\n</tool>", "empty"),
    ("<tool: edit>\nf.py\nold\nnew\n</tool>", "SEARCH"),
    ("<tool: create>\n\n</tool>", "path"),
])
def test_format_errors(text, message):
    with pytest.raises(FormatError, match=message):
        parse_tool_call(text)


def test_minimal_edit_is_unique_and_reproduces_the_fix():
    rng = random.Random(0)
    for _ in range(200):
        lines = [f"line {rng.randint(0, 5)}\n" for _ in range(rng.randint(2, 30))]
        old = "".join(lines)
        new_lines = list(lines)
        i = rng.randrange(len(new_lines))
        kind = rng.choice(["change", "delete", "insert"])
        if kind == "change":
            new_lines[i] = "changed\n"
        elif kind == "delete":
            del new_lines[i]
        else:
            new_lines.insert(i, "inserted\n")
        new = "".join(new_lines)
        if new == old:
            continue
        search, replace = minimal_edit(old, new)
        assert occurrences(old, search) == 1
        assert old.replace(search, replace, 1) == new


def test_cut_keeps_head_and_tail():
    text = "a" * 100 + "b" * 100
    out = cut(text, 50)
    assert out.startswith("a" * 25) and out.endswith("b" * 25) and "150 characters cut" in out
    assert cut("short", 50) == "short"


def test_trajectory_segments_mark_observations():
    record = {"messages": [
        {"role": "system", "content": "S", "tool": None}, {"role": "user", "content": "U", "tool": None},
        {"role": "assistant", "content": "A1", "tool": None}, {"role": "tool", "content": "O1", "tool": "bash"},
        {"role": "tool", "content": "O2", "tool": "bash"}, {"role": "assistant", "content": "A2", "tool": None}]}
    segs = trajectory_segments(record)
    assert [obs for _, obs in segs] == [False, True, False]
    text = "".join(t for t, _ in segs)
    expected = "".join(f"{chat_header(m['role'])}{m['content']}{EOT}" for m in record["messages"])
    assert text == expected
    assert segs[1][0] == f"{chat_header('tool')}O1{EOT}{chat_header('tool')}O2{EOT}"
    assert prompt_text(record["messages"]).endswith(chat_header("assistant"))


def test_openai_policy_speaks_chat_completions(chat_server):
    url, handler = chat_server
    handler.script = ["<tool: submit>\n</tool>"]
    policy = OpenAIPolicy(url, "flaky", api_key="k", retries=2)
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                {"role": "assistant", "content": "A"}, {"role": "tool", "content": "O"}]
    reply = policy.act(messages)
    assert reply.text == "<tool: submit>\n</tool>" and reply.tokens == 15
    assert len(handler.requests) == 2  # one 503, retried
    req = handler.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer k"
    assert [m["role"] for m in req["body"]["messages"]] == ["system", "user", "assistant", "user"]


def test_openai_policy_unreachable_is_a_clear_error():
    policy = OpenAIPolicy("http://127.0.0.1:9/v1", "m", retries=0, timeout_s=2)
    with pytest.raises(RuntimeError, match="unreachable"):
        policy.act([{"role": "user", "content": "hi"}])


def test_chat_template_renders_what_prompt_text_renders():
    """A served model (vLLM's chat completions) formats conversations as training and the hf policy do."""
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    from cwm.data.chat import CHAT_TEMPLATE
    from cwm.data.special_tokens import BOS

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0, BOS: 1}, unk_token="<unk>")),
                                  bos_token=BOS, unk_token="<unk>")
    tok.chat_template = CHAT_TEMPLATE
    messages = [{"role": "system", "content": "sys {{ not jinja }}"}, {"role": "user", "content": "fix\nit"},
                {"role": "assistant", "content": "<tool: submit>\n</tool>"}, {"role": "tool", "content": "ok"}]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == BOS + prompt_text(messages)
