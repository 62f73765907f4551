"""The CWM trace text format (DESIGN.md §1): special tokens, rendering a record to text, parsing it back.

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

# In CWM's vocabulary these are ids 128100-128107, in this order.
TRACE_TOKENS = (
    TRACE_CONTEXT_START, FRAME_SEP, CALL_SEP, LINE_SEP, RETURN_SEP, EXCEPTION_SEP, ACTION_SEP, ARG_SEP,
)
START_MARKER = "  # << START_OF_TRACE"
UNCHANGED = ".."

_KIND_SEP = {"call": CALL_SEP, "line": LINE_SEP, "return": RETURN_SEP, "exception": EXCEPTION_SEP}
_SEP_KIND = {sep: kind for kind, sep in _KIND_SEP.items()}


def render_trace(record, *, context=True):
    """A trace record as CWM text: the context, then one `<|frame_sep|>`-terminated frame per line.

    `call`/`line` frames carry LOCALS (json.dumps of name -> repr text, ".." where unchanged) and their source;
    `return`/`exception` frames carry their source and VALUE (json.dumps of the repr). The tokenizer appends the
    end-of-text token; depth is not written (nesting shows in the order of call and return frames).
    """
    parts = [TRACE_CONTEXT_START, record["context"] if context else "", FRAME_SEP, "\n"]
    for frame in record["frames"]:
        kind = frame["kind"]
        parts.append(_KIND_SEP[kind])
        if kind in ("call", "line"):
            parts += [json.dumps(frame["locals"]), ACTION_SEP, frame["source"]]
        else:
            parts += [ACTION_SEP, frame["source"], ARG_SEP, json.dumps(frame["value"])]
        parts += [FRAME_SEP, "\n"]
    return "".join(parts)


class TraceParseError(ValueError):
    pass


def parse_trace(text):
    """CWM trace text back to {"context": str, "frames": [{"kind", "source", "locals", "value"}]}."""
    if not text.startswith(TRACE_CONTEXT_START):
        raise TraceParseError(f"a trace starts with {TRACE_CONTEXT_START}, this starts with {text[:30]!r}")
    chunks = text[len(TRACE_CONTEXT_START):].split(FRAME_SEP)
    context, chunks, tail = chunks[0], chunks[1:-1], chunks[-1]
    if tail.strip():
        raise TraceParseError(f"text after the last {FRAME_SEP}: {tail[:30]!r}")
    frames = []
    for number, chunk in enumerate(chunks, 1):
        if chunk.startswith("\n"):
            chunk = chunk[1:]
        sep = next((s for s in _SEP_KIND if chunk.startswith(s)), None)
        if sep is None:
            raise TraceParseError(f"frame {number} does not start with a frame-kind token: {chunk[:30]!r}")
        kind, body = _SEP_KIND[sep], chunk[len(sep):]
        try:
            if kind in ("call", "line"):
                locals_text, source = body.split(ACTION_SEP, 1)
                frames.append({"kind": kind, "source": source, "locals": json.loads(locals_text), "value": None})
            else:
                empty, rest = body.split(ACTION_SEP, 1)
                source, value_text = rest.split(ARG_SEP, 1)
                if empty:
                    raise ValueError(f"unexpected {empty[:20]!r} before {ACTION_SEP}")
                frames.append({"kind": kind, "source": source, "locals": None, "value": json.loads(value_text)})
        except ValueError as e:
            raise TraceParseError(f"frame {number} ({kind}) is malformed: {e}") from None
    return {"context": context, "frames": frames}
