"""CWM text format: rendering uses exactly DESIGN.md §1's tokens and the parser gives the frames back."""
import json

import pytest

from tracer import TraceConfig, trace_call
from tracer.format import (ACTION_SEP, ARG_SEP, CALL_SEP, EXCEPTION_SEP, FRAME_SEP, LINE_SEP, RETURN_SEP,
                           TRACE_CONTEXT_START, TRACE_TOKENS, TraceParseError, parse_trace, render_trace,
                           trace_segments)


@pytest.mark.parametrize("name", ["exceptions", "generators", "hostile_values", "classes"])
def test_render_then_parse_gives_the_record_back(corpus, here, name, backend):
    config = TraceConfig(root=str(here), backend=backend, depth=2)
    (record,) = trace_call(corpus.PROGRAMS[name], config=config)
    for parsed in (parse_trace(render_trace(record)), parse_trace(trace_segments(record))):
        assert parsed["context"] == record["context"]
        assert parsed["frames"] == _fields(record)


def test_rendered_frames_are_the_design_strings():
    """CWM's stream: nothing between <|frame_sep|> and the next kind token, each source line with its newline,
    the context as it is (here ending with its newline)."""
    record = {"context": "def f(x):  # << START_OF_TRACE\n    return x\n", "frames": [
        {"kind": "call", "locals": {"x": "1"}, "source": "def f(x):", "value": None},
        {"kind": "line", "locals": {"x": ".."}, "source": "    return x", "value": None},
        {"kind": "return", "locals": None, "source": "    return x", "value": "1"},
    ]}
    assert render_trace(record) == (
        TRACE_CONTEXT_START + "def f(x):  # << START_OF_TRACE\n    return x\n" + FRAME_SEP
        + CALL_SEP + '{"x": "1"}' + ACTION_SEP + "def f(x):\n" + FRAME_SEP
        + LINE_SEP + '{"x": ".."}' + ACTION_SEP + "    return x\n" + FRAME_SEP
        + RETURN_SEP + ACTION_SEP + "    return x\n" + ARG_SEP + '"1"' + FRAME_SEP)


def test_tokens_are_in_cwm_id_order():
    """CWM's vocabulary has the trace tokens at 128100-128107 in this order (its PROMPTING_GUIDE.md)."""
    assert TRACE_TOKENS == ("<|frame_sep|>", "<|action_sep|>", "<|return_sep|>", "<|call_sep|>", "<|line_sep|>",
                            "<|exception_sep|>", "<|arg_sep|>", "<|trace_context_start|>")


def _fields(record):
    return [{k: f[k] for k in ("kind", "source", "locals", "value")} for f in record["frames"]]


def test_hostile_content_round_trips_and_structure_comes_only_from_the_renderer(here, backend, hostile_tokens):
    """Sources, locals, values and exception messages holding every special-token string (and fake frames):
    the renderer's token pieces are exactly the structure of the frames, and both parsers give the record back."""
    hostile = hostile_tokens
    config = TraceConfig(root=str(here), backend=backend, depth=2, value_budget=1000)
    (record,) = trace_call(hostile.forge, 3, config=config)
    frames = record["frames"]
    contents = [text for text, is_token in trace_segments(record) if not is_token]
    for token in hostile.TOKENS:    # the content really is hostile: every token string in values and sources
        assert any(token in text for text in contents), token
    assert any(token in f["source"] for f in frames for token in hostile.TOKENS)
    tokens = [text for text, is_token in trace_segments(record) if is_token]
    kinds = [f["kind"] for f in frames]
    expected = [TRACE_CONTEXT_START, FRAME_SEP]
    for kind in kinds:
        sep = {"call": CALL_SEP, "line": LINE_SEP, "return": RETURN_SEP, "exception": EXCEPTION_SEP}[kind]
        expected += [sep, ACTION_SEP, FRAME_SEP] if kind in ("call", "line") else [sep, ACTION_SEP, ARG_SEP, FRAME_SEP]
    assert tokens == expected
    assert tokens.count(FRAME_SEP) == len(frames) + 1
    assert all(text in TRACE_TOKENS for text in tokens)
    for parsed in (parse_trace(trace_segments(record)), parse_trace(render_trace(record))):
        assert parsed["context"] == record["context"]
        assert parsed["frames"] == _fields(record)


def test_text_parser_reads_a_context_that_holds_the_separator():
    record = {"context": "s = '<|frame_sep|><|call_sep|>{}'  # << START_OF_TRACE\n", "frames": [
        {"kind": "call", "locals": {"s": "'<|frame_sep|>'"}, "source": "x = '<|action_sep|>\\n'", "value": None},
        {"kind": "return", "locals": None, "source": "<|arg_sep|>", "value": "'<|frame_sep|>\\n'"}]}
    for parsed in (parse_trace(render_trace(record)), parse_trace(trace_segments(record))):
        assert parsed == {"context": record["context"], "frames": _fields(record)}


@pytest.mark.parametrize("bad", ["no start token", TRACE_CONTEXT_START + "ctx" + FRAME_SEP + "junk" + FRAME_SEP,
                                 TRACE_CONTEXT_START + "ctx" + FRAME_SEP + LINE_SEP + "{not json" + ACTION_SEP + "x"
                                 + FRAME_SEP])
def test_parser_names_what_is_wrong(bad):
    with pytest.raises(TraceParseError):
        parse_trace(bad)
