"""Reading how the entry left from trace text: exception frames leave a line, and only sometimes the scope."""
from cwm.eval.execute import trace_function
from cwm.eval.trace_text import entry_result, frame_key, prompt_end, split_frames
from tracer.format import render_trace

CASES = [  # (code, input, how the entry left: (value, raised))
    ("def g(x):\n    raise KeyError(x)\n\ndef f(x):\n    y = x\n    return g(y)\n", "3", ("KeyError(3)", True)),
    ("def g(x):\n    raise KeyError(x)\n\ndef f(x):\n    try:\n        g(x)\n    except KeyError:\n        return 'caught'\n",
     "3", ("'caught'", False)),
    ("def f(x):\n    try:\n        1 / x\n    except ZeroDivisionError:\n        pass\n    return [x]\n", "0", ("[0]", False)),
    ("def f(x):\n    if x:\n        raise ValueError('no')\n    return x\n", "1", ("ValueError('no')", True)),
    ("def h(x):\n    return x + 1\n\ndef g(x):\n    return h(x) * 2\n\ndef f(x):\n    return g(x) - 1\n", "2", ("5", False)),
]


def test_entry_result_of_real_traces():
    for code, args, expected in CASES:
        text = render_trace(trace_function(code, "f", args))
        continuation = text[prompt_end(text):]
        assert entry_result(continuation) == expected, code
        # without its last frame the continuation does not show the entry leaving
        frames = split_frames(continuation)
        assert entry_result(continuation[:continuation.rindex(frames[-1][1])]) == (None, False), code


def test_frames_compared_by_content():
    a = '<|line_sep|>{"x": "1", "y": ".."}<|action_sep|>    y = x\n<|frame_sep|>'
    b = '<|line_sep|>{"y": "..", "x": "1"}<|action_sep|>    y = x<|frame_sep|>'
    c = '<|line_sep|>{"x": "2", "y": ".."}<|action_sep|>    y = x\n<|frame_sep|>'
    assert frame_key("line", a) == frame_key("line", b) != frame_key("line", c)


def test_generation_stops_exactly_where_the_entry_returned():
    """The in-training eval's stopping criterion, fed a real trace's continuation one token at a time (as generate
    does): it fires at the separator that completes the entry's return frame — the trace's last token — and never
    before, including when a callee raises inside the entry's `try`; an entry that raises ends the trace itself
    (EOS), so the criterion stays quiet."""
    import re

    import torch

    from cwm.eval.world_model import _EntryReturned
    from tracer.format import TRACE_TOKENS

    ids = {t: i + 1 for i, t in enumerate(TRACE_TOKENS)}  # content characters are id 0
    split = re.compile("(" + "|".join(re.escape(t) for t in TRACE_TOKENS) + ")")
    for code, args, (value, raised) in CASES:
        text = render_trace(trace_function(code, "f", args))
        tokens = [t for piece in split.split(text[prompt_end(text):]) if piece
                  for t in ([ids[piece]] if piece in ids else [0] * len(piece))]
        stop = _EntryReturned(ids, 1, 0)
        fired = [bool(stop(torch.tensor([tokens[:n]]), None)[0]) for n in range(1, len(tokens) + 1)]
        assert fired == ([False] * (len(tokens) - 1) + [not raised]), code
