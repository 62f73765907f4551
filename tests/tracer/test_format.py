"""CWM text format: rendering uses exactly DESIGN.md §1's tokens and the parser gives the frames back."""
import json

import pytest

from tracer import TraceConfig, trace_call
from tracer.format import (ACTION_SEP, ARG_SEP, CALL_SEP, FRAME_SEP, LINE_SEP, RETURN_SEP, TRACE_CONTEXT_START,
                           TraceParseError, parse_trace, render_trace)


@pytest.mark.parametrize("name", ["exceptions", "generators", "hostile_values", "classes"])
def test_render_then_parse_gives_the_record_back(corpus, here, name, backend):
    config = TraceConfig(root=str(here), backend=backend, depth=2)
    (record,) = trace_call(corpus.PROGRAMS[name], config=config)
    text = render_trace(record)
    parsed = parse_trace(text)
    assert parsed["context"] == record["context"]
    assert parsed["frames"] == [{k: f[k] for k in ("kind", "source", "locals", "value")} for f in record["frames"]]


def test_rendered_frames_are_the_design_strings():
    record = {"context": "def f(x):  # << START_OF_TRACE\n    return x", "frames": [
        {"kind": "call", "locals": {"x": "1"}, "source": "def f(x):", "value": None},
        {"kind": "line", "locals": {"x": ".."}, "source": "    return x", "value": None},
        {"kind": "return", "locals": None, "source": "    return x", "value": "1"},
    ]}
    assert render_trace(record).split("\n")[-4:] == [
        f'{CALL_SEP}{json.dumps({"x": "1"})}{ACTION_SEP}def f(x):{FRAME_SEP}',
        f'{LINE_SEP}{json.dumps({"x": ".."})}{ACTION_SEP}    return x{FRAME_SEP}',
        f'{RETURN_SEP}{ACTION_SEP}    return x{ARG_SEP}"1"{FRAME_SEP}',
        "",
    ]
    assert render_trace(record).startswith(TRACE_CONTEXT_START + record["context"] + FRAME_SEP)


@pytest.mark.parametrize("bad", ["no start token", TRACE_CONTEXT_START + "ctx" + FRAME_SEP + "junk" + FRAME_SEP,
                                 TRACE_CONTEXT_START + "ctx" + FRAME_SEP + LINE_SEP + "{not json" + ACTION_SEP + "x"
                                 + FRAME_SEP])
def test_parser_names_what_is_wrong(bad):
    with pytest.raises(TraceParseError):
        parse_trace(bad)
