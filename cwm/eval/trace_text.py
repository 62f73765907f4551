"""Reading generated trace text (DESIGN §1) leniently: the frames a model wrote, and the entry's result.

A model's continuation may stop anywhere; only complete frames (ending in `<|frame_sep|>`) count. A newline right
after a frame separator is ignored (older renderings put one there).
"""
from __future__ import annotations

import json

from tracer.format import ARG_SEP, CALL_SEP, EXCEPTION_SEP, FRAME_SEP, LINE_SEP, RETURN_SEP

KIND_OF_SEP = {CALL_SEP: "call", LINE_SEP: "line", RETURN_SEP: "return", EXCEPTION_SEP: "exception"}
KINDS = ("call", "line", "return", "exception")


def split_frames(text: str) -> list[tuple[str, str]]:
    """(kind, frame text from its kind token to its frame separator, both included) of each complete frame;
    kind is "other" for a frame that does not start with a kind token."""
    frames = []
    for piece in text.split(FRAME_SEP)[:-1]:
        piece = piece[1:] if piece.startswith("\n") else piece
        kind = next((k for sep, k in KIND_OF_SEP.items() if piece.startswith(sep)), "other")
        frames.append((kind, piece + FRAME_SEP))
    return frames


def entry_result(continuation: str) -> tuple[str | None, bool]:
    """(value repr, raised) of the entry's return or exception frame in a continuation written after the entry's
    call frame (nested call/return pairs skipped); (None, False) when it has no complete one."""
    depth = 1
    for kind, frame in split_frames(continuation):
        if kind == "call":
            depth += 1
        elif kind in ("return", "exception"):
            depth -= 1
            if depth == 0:
                body = frame[:-len(FRAME_SEP)]
                if ARG_SEP not in body:
                    return None, False
                try:
                    value = json.loads(body.split(ARG_SEP, 1)[1])
                except json.JSONDecodeError:
                    return None, False
                return (value, kind == "exception") if isinstance(value, str) else (None, False)
    return None, False


def prompt_end(text: str) -> int:
    """Where a rendered trace's entry call frame ends: the prompt of full-trace generation is text[:prompt_end]."""
    return text.index(FRAME_SEP, text.index(CALL_SEP)) + len(FRAME_SEP)
