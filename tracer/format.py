"""The CWM trace text format (DESIGN.md §1): special tokens, rendering a record to text, parsing it back.

The stream is the one CWM's released trace debugger builds (`demos/cwmdbg.py` in facebookresearch/cwm):

    <|trace_context_start|> CONTEXT <|frame_sep|>
    then per frame: KIND [LOCALS] <|action_sep|> SOURCE+"\\n" [<|arg_sep|> VALUE] <|frame_sep|>

with nothing between a `<|frame_sep|>` and the next kind token, and a frame's source line ending in its newline
(the record stores the line without it; the renderer adds it). CONTEXT is the record's context as it is.

Structure tokens come only from the renderer. `trace_segments` gives the stream as (text, is_token) pieces: a
tokenizer encodes every text piece with special-token recognition off (what CWM's `encode_ordinary` does), so a
value, source line or context that holds `'<|frame_sep|>'` stays text. `parse_trace` takes those segments (exact
for any content), or the joined text: there LOCALS and VALUE are read as JSON (their JSON strings may hold any
token string) and SOURCE up to its newline (a source line holds none), so values and sources of any content come
back exactly; only a CONTEXT that itself holds a whole well-formed frame sequence could be misread from text.

Standard library only: this module is imported inside the traced program's own interpreter.
"""
import json

TRACE_CONTEXT_START = "<|trace_context_start|>"
FRAME_SEP = "<|frame_sep|>"
CALL_SEP = "<|call_sep|>"
LINE_SEP = "<|line_sep|>"
RETURN_SEP = "<|return_sep|>"
EXCEPTION_SEP = "<|exception_sep|>"
ACTION_SEP = "<|action_sep|>"
ARG_SEP = "<|arg_sep|>"

# CWM's ids 128100-128107, in this order (facebookresearch/cwm PROMPTING_GUIDE.md, "Trace Prediction Tokens").
TRACE_TOKENS = (
    FRAME_SEP, ACTION_SEP, RETURN_SEP, CALL_SEP, LINE_SEP, EXCEPTION_SEP, ARG_SEP, TRACE_CONTEXT_START,
)
START_MARKER = "  # << START_OF_TRACE"
UNCHANGED = ".."

_KIND_SEP = {"call": CALL_SEP, "line": LINE_SEP, "return": RETURN_SEP, "exception": EXCEPTION_SEP}
_SEP_KIND = {sep: kind for kind, sep in _KIND_SEP.items()}
_TOKEN = True
_TEXT = False


def trace_segments(record, *, context=True):
    """The trace as (text, is_token) pieces in stream order: is_token pieces are the structure tokens the renderer
    puts (each one special token), the others are content (context, JSON of locals and values, source lines),
    which a tokenizer must encode with special-token recognition off. Empty content pieces are left out.

    `call`/`line` frames carry LOCALS (json.dumps of name -> repr text, ".." where unchanged) and their source;
    `return`/`exception` frames carry their source and VALUE (json.dumps of the repr). The tokenizer appends the
    end-of-text token; depth is not written (nesting shows in the order of call and return frames).
    """
    out = [(TRACE_CONTEXT_START, _TOKEN)]
    text = record["context"] if context else ""
    if text:
        out.append((text, _TEXT))
    out.append((FRAME_SEP, _TOKEN))
    dumps = json.dumps
    for frame in record["frames"]:
        kind = frame["kind"]
        out.append((_KIND_SEP[kind], _TOKEN))
        if kind == "call" or kind == "line":
            out += ((dumps(frame["locals"]), _TEXT), (ACTION_SEP, _TOKEN), (frame["source"] + "\n", _TEXT))
        else:
            out += ((ACTION_SEP, _TOKEN), (frame["source"] + "\n", _TEXT), (ARG_SEP, _TOKEN),
                    (dumps(frame["value"]), _TEXT))
        out.append((FRAME_SEP, _TOKEN))
    return out


def render_trace(record, *, context=True):
    """A trace record as CWM text: `trace_segments` joined."""
    return "".join(text for text, _ in trace_segments(record, context=context))


class TraceParseError(ValueError):
    pass


def parse_trace(trace):
    """CWM trace text, or `trace_segments`' pieces, back to {"context": str, "frames": [{"kind", "source",
    "locals", "value"}]} (the source without the newline the renderer added)."""
    if isinstance(trace, str):
        return _parse_text(trace)
    return _parse_segments(list(trace))


def _parse_segments(segments):
    """The exact inverse of trace_segments: structure is read from is_token pieces only."""
    tokens = [(t, is_token) for t, is_token in segments if is_token or t]
    if not tokens or tokens[0] != (TRACE_CONTEXT_START, _TOKEN):
        raise TraceParseError(f"a trace starts with {TRACE_CONTEXT_START}, this starts with {tokens[:1]!r}")
    pos, context = 1, ""
    if pos < len(tokens) and not tokens[pos][1]:
        context, pos = tokens[pos][0], pos + 1
    if pos >= len(tokens) or tokens[pos] != (FRAME_SEP, _TOKEN):
        raise TraceParseError(f"the context is not followed by {FRAME_SEP}")
    pos += 1
    frames = []
    while pos < len(tokens):
        number = len(frames) + 1
        sep, is_token = tokens[pos]
        kind = _SEP_KIND.get(sep) if is_token else None
        if kind is None:
            raise TraceParseError(f"frame {number} does not start with a frame-kind token: {sep[:30]!r}")
        end = pos + 1
        while end < len(tokens) and tokens[end] != (FRAME_SEP, _TOKEN):
            end += 1
        if end == len(tokens):
            raise TraceParseError(f"frame {number} ({kind}) has no closing {FRAME_SEP}")
        parts, current = [], []
        for text, is_token in tokens[pos + 1:end]:
            if is_token:
                parts.append("".join(current))
                parts.append(text)
                current = []
            else:
                current.append(text)
        parts.append("".join(current))
        frames.append(_frame(number, kind, parts))
        pos = end + 1
    return {"context": context, "frames": frames}


def _frame(number, kind, parts):
    """One frame from its body split at its tokens: [text, token, text, ...]."""
    try:
        if kind == "call" or kind == "line":
            if len(parts) != 3 or parts[1] != ACTION_SEP:
                raise ValueError(f"expected LOCALS {ACTION_SEP} SOURCE")
            locals_text, _, source = parts
            return {"kind": kind, "source": _source(source), "locals": json.loads(locals_text), "value": None}
        if len(parts) != 5 or parts[1] != ACTION_SEP or parts[3] != ARG_SEP or parts[0]:
            raise ValueError(f"expected {ACTION_SEP} SOURCE {ARG_SEP} VALUE")
        return {"kind": kind, "source": _source(parts[2]), "locals": None, "value": json.loads(parts[4])}
    except ValueError as e:
        raise TraceParseError(f"frame {number} ({kind}) is malformed: {e}") from None


def _source(text):
    if not text.endswith("\n"):
        raise ValueError(f"its source line {text[:30]!r} does not end with a newline")
    return text[:-1]


_decoder = json.JSONDecoder()


def _parse_text(text):
    if not text.startswith(TRACE_CONTEXT_START):
        raise TraceParseError(f"a trace starts with {TRACE_CONTEXT_START}, this starts with {text[:30]!r}")
    start = len(TRACE_CONTEXT_START)
    # The context ends at a <|frame_sep|> after which the rest reads as frames: the first such one (past the first,
    # only one followed by at least one frame: a context holding the token, not junk after an empty trace).
    at = text.find(FRAME_SEP, start)
    if at < 0:
        raise TraceParseError(f"no {FRAME_SEP} after the context")
    first_error, first = None, True
    while at >= 0:
        try:
            frames = _parse_frames(text, at + len(FRAME_SEP))
            if frames or first:
                return {"context": text[start:at], "frames": frames}
        except TraceParseError as e:
            first_error = first_error or e
        at, first = text.find(FRAME_SEP, at + 1), False
    raise first_error


def _expect(text, pos, token, number, kind):
    if not text.startswith(token, pos):
        raise TraceParseError(f"frame {number} ({kind}) is malformed: expected {token} at {text[pos:pos + 30]!r}")
    return pos + len(token)


def _parse_frames(text, pos):
    """The frames of `text` from `pos` on, each read by its grammar: JSON where JSON stands, a source up to its
    newline."""
    frames = []
    n = len(text)
    while pos < n:
        number = len(frames) + 1
        sep = next((s for s in _SEP_KIND if text.startswith(s, pos)), None)
        if sep is None:
            raise TraceParseError(f"frame {number} does not start with a frame-kind token: {text[pos:pos + 30]!r}")
        kind = _SEP_KIND[sep]
        pos += len(sep)
        try:
            locals_ = value = None
            if kind == "call" or kind == "line":
                locals_, pos = _decoder.raw_decode(text, pos)
            pos = _expect(text, pos, ACTION_SEP, number, kind)
            newline = text.find("\n", pos)
            if newline < 0:
                raise TraceParseError(f"frame {number} ({kind}) is malformed: its source line has no newline")
            source, pos = text[pos:newline], newline + 1
            if kind == "return" or kind == "exception":
                pos = _expect(text, pos, ARG_SEP, number, kind)
                value, pos = _decoder.raw_decode(text, pos)
            pos = _expect(text, pos, FRAME_SEP, number, kind)
        except ValueError as e:
            if isinstance(e, TraceParseError):
                raise
            raise TraceParseError(f"frame {number} ({kind}) is malformed: {e}") from None
        frames.append({"kind": kind, "source": source, "locals": locals_, "value": value})
    return frames
