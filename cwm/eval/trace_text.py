"""Reading generated trace text (DESIGN §1) leniently: the frames a model wrote, and the entry's result.

A model's continuation may stop anywhere; only complete frames (ending in `<|frame_sep|>`) count. A newline right
after a frame separator is ignored (older renderings put one there).
"""
from __future__ import annotations

import json

from tracer.format import ACTION_SEP, ARG_SEP, CALL_SEP, EXCEPTION_SEP, FRAME_SEP, LINE_SEP, RETURN_SEP

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


def frame_key(kind: str, frame: str):
    """What a frame says, for comparing a generated frame with the true one: its kind, its locals (parsed JSON:
    key order and spacing do not matter), its source line without the trailing newline (a model may leave it out,
    as CWM's trace debugger strips it) and its value. Text that does not parse is kept as it is."""
    body = frame[:-len(FRAME_SEP)] if frame.endswith(FRAME_SEP) else frame
    sep = next((s for s, k in KIND_OF_SEP.items() if k == kind), None)
    if sep is None or not body.startswith(sep) or ACTION_SEP not in body:
        return (kind, body)
    head, action = body[len(sep):].split(ACTION_SEP, 1)
    value = None
    if kind in ("return", "exception") and ARG_SEP in action:
        action, value_text = action.split(ARG_SEP, 1)
        try:
            value = json.loads(value_text)
        except json.JSONDecodeError:
            value = ("unparsed", value_text)
    try:
        state = json.loads(head) if head else None
    except json.JSONDecodeError:
        state = ("unparsed", head)
    if isinstance(state, dict):
        state = tuple(sorted((str(k), json.dumps(v)) for k, v in state.items()))
    return (kind, state, action.rstrip("\n"), value)


def entry_result(continuation: str) -> tuple[str | None, bool]:
    """(value repr, raised) of how the entry left, read from a continuation written after its call frame;
    (None, False) when the continuation does not show it leaving.

    Depth is not written in the text, so it is followed from the frames: a call enters a scope, a return leaves
    one. An exception frame means an exception left a *line*, not necessarily the scope: when the next frame is
    another exception frame the exception has left the scope (it is now passing through the caller's line);
    any other next frame means the scope caught it. So the entry raised when its last frame is an exception
    frame with nothing complete after it.
    """
    depth, pending = 1, None   # pending: the value of an exception frame whose fate the next frame decides
    for kind, frame in split_frames(continuation):
        if pending is not None and kind == "exception":
            depth -= 1          # the exception left the scope it was raised in
        pending = None
        if kind == "call":
            depth += 1
        elif kind == "return":
            depth -= 1
            if depth == 0:
                value = _frame_value(frame)
                return (value, False) if value is not None else (None, False)
        elif kind == "exception":
            if depth <= 0:
                return None, False
            pending = _frame_value(frame) if depth == 1 else ""
    if pending:
        return pending, True
    return None, False


def _frame_value(frame: str) -> str | None:
    body = frame[:-len(FRAME_SEP)]
    if ARG_SEP not in body:
        return None
    try:
        value = json.loads(body.split(ARG_SEP, 1)[1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, str) else None


def prompt_end(text: str) -> int:
    """Where a rendered trace's entry call frame ends: the prompt of full-trace generation is text[:prompt_end]."""
    return text.index(FRAME_SEP, text.index(CALL_SEP)) + len(FRAME_SEP)


def prompt_segments(segments: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """`prompt_end` on a trace's (text, is_structure) segments: the segments through the entry call frame's
    `<|frame_sep|>` (structure segments only: a value holding the token string does not count)."""
    call = segments.index((CALL_SEP, True))
    return segments[:segments.index((FRAME_SEP, True), call) + 1]


def text_segments(text: str) -> list[tuple[str, bool]]:
    """A rendered trace's text (or a prefix of whole frames) back to `tracer.format.trace_segments` pieces, for
    callers that kept only the text: `parse_trace` reads values and sources of any content exactly, and the
    segments must render the text again (else ValueError). Carry the renderer's segments where you can: only a
    context holding a whole well-formed frame sequence could be misread from text."""
    from tracer.format import parse_trace, trace_segments

    segments = [(t, bool(s)) for t, s in trace_segments(parse_trace(text))]
    if "".join(t for t, _ in segments) != text:
        raise ValueError("the text is not a rendered trace (its parse does not render it again)")
    return segments
