"""A trajectory as a chat document for training, with observation pieces marked for the loss mask.

Each message becomes `<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>` (Llama-3 / CWM
style, `cwm.data.special_tokens`). A `tool` turn is an observation — the environment wrote it, not the model —
so its whole turn, header included, is flagged and can be dropped from the loss. The tokenizer adds BOS/EOS.
The HF policy renders its prompts with the same function, so training and acting see one format.
"""
from __future__ import annotations

from cwm.data.special_tokens import EOT, chat_header


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


def prompt_text(messages: list[dict]) -> str:
    """What a model continues to write its next turn: the conversation, then an open assistant header."""
    return "".join(text for text, _ in message_segments(messages)) + chat_header("assistant")
