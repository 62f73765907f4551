"""Reading the entry's result out of a generated trace continuation, and comparing results by value."""
from __future__ import annotations

from cwm.data.tokenizer import load_tokenizer
from cwm.eval.world_model import WorldModelEval, same_value
from tracer.format import render_trace


def test_entry_result_skips_nested_returns(corpus):
    tok = load_tokenizer(corpus["tokenizer"])
    frames = [
        {"kind": "call", "depth": 0, "source": "def f(x):", "locals": {"x": "1"}, "value": None},
        {"kind": "line", "depth": 0, "source": "    return g(x) + [2]", "locals": {"x": ".."}, "value": None},
        {"kind": "call", "depth": 1, "source": "def g(y):", "locals": {"y": "1"}, "value": None},
        {"kind": "return", "depth": 1, "source": "    return [y]", "locals": None, "value": "[1]"},
        {"kind": "return", "depth": 0, "source": "    return g(x) + [2]", "locals": None, "value": "[1, 2]"},
    ]
    text = render_trace({"context": "def f(x):  # << START_OF_TRACE\n    return g(x) + [2]", "frames": frames})
    continuation = text.split("<|frame_sep|>", 2)[2]  # everything after the entry's call frame
    evaluator = WorldModelEval(tok, [], max_len=512)
    assert evaluator.entry_result(tok(continuation, add_special_tokens=False)["input_ids"]) == ("[1, 2]", False)
    unfinished = continuation.rsplit("<|return_sep|>", 1)[0]
    assert evaluator.entry_result(tok(unfinished, add_special_tokens=False)["input_ids"]) == (None, False)


def test_same_value_compares_python_values():
    assert same_value("{2, 1}", "{1, 2}") and same_value("1.0", "1.00") and same_value("(1,)", "(1, )")
    assert not same_value("[1, 2]", "[2, 1]")
    assert same_value("<Foo object>", "<Foo object>") and not same_value("<Foo>", "<Bar>")
