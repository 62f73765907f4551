"""A hostile project through cwm-trace, the renderer and the tokenizer: its sources, values, exception messages and
test names (parametrize ids) hold every special-token string. Rendered and tokenized, the structural ids stand
exactly where the renderer put them (one <|frame_sep|> per frame plus the context's), and parse(render(r)) == r,
from the text and from the token ids."""
from __future__ import annotations

import json
import random

from cwm.data.documents import render_pieces, tokenize_pieces, trace_segments_from_ids
from cwm.data.recipe import Source
from cwm.data.special_tokens import ALL_SPECIAL_TOKENS, BOS, EOS
from cwm.data.tokenizer import train_bpe
from tracer.format import (ACTION_SEP, ARG_SEP, CALL_SEP, EXCEPTION_SEP, FRAME_SEP, LINE_SEP, RETURN_SEP,
                           TRACE_CONTEXT_START, parse_trace, render_trace, trace_segments)
from trace_cli_helpers import cli, shard_samples

TOKENS = list(ALL_SPECIAL_TOKENS)
TEST_FILE = f'''import pytest

TOKENS = {TOKENS!r}


class Forger:
    def __repr__(self):
        return '<|exception_sep|><|action_sep|>    raise\\n<|arg_sep|>"boom"<|frame_sep|><|end_of_text|>'


def shout(text):  # <|frame_sep|><|call_sep|>{{}}<|action_sep|>
    return text.upper() + "<|eot_id|><|start_header_id|>user<|end_header_id|>"


@pytest.mark.parametrize("token", TOKENS)
def test_token(token):
    value = "<|frame_sep|>" + token
    forger = Forger()
    out = shout(value)
    try:
        raise ValueError(token + "<|arg_sep|><|frame_sep|>")
    except ValueError as e:
        caught = e
    assert out and forger and caught


def test_raises_with_token():
    raise RuntimeError("<|frame_sep|><|return_sep|><|action_sep|>x\\n<|arg_sep|>\\"1\\"<|frame_sep|><|end_of_text|>")
'''


def test_hostile_project_round_trips_and_never_forges(tmp_path, target_python):
    project = tmp_path / "hostile"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_tokens.py").write_text(TEST_FILE)
    out = tmp_path / "traces"
    proc = cli(project, "-o", out, "--workers", "1", "--python", target_python)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [r for _, r in shard_samples(out)]
    tests = [r for r in records if r["origin"]["kind"] == "test"]
    assert len(tests) == len(TOKENS) + 1
    assert {t for t in TOKENS if any(t in r["origin"]["qualname"] for r in tests)} == set(TOKENS)   # test names
    rendered = "".join(render_trace(r) for r in records)
    content = "".join(text for r in records for text, is_token in trace_segments(r) if not is_token)
    assert all(t in content for t in TOKENS)     # sources, values and exception messages hold every token string
    assert any(f["kind"] == "exception" and FRAME_SEP in f["value"] for r in records for f in r["frames"])

    tokenizer = train_bpe([rendered, "".join(TOKENS) * 3], 700, tmp_path / "tok")
    tid = tokenizer.convert_tokens_to_ids
    source = Source(name="traces", kind="trace", paths=[], weight=1.0)
    for record in records:
        frames = record["frames"]
        fields = [{k: f[k] for k in ("kind", "source", "locals", "value")} for f in frames]
        assert parse_trace(render_trace(record)) == {"context": record["context"], "frames": fields}
        ids, _ = tokenize_pieces(tokenizer, render_pieces(source, record, random.Random(0)))
        kinds = [f["kind"] for f in frames]
        want = {FRAME_SEP: len(frames) + 1, ACTION_SEP: len(frames), TRACE_CONTEXT_START: 1,
                CALL_SEP: kinds.count("call"), LINE_SEP: kinds.count("line"), RETURN_SEP: kinds.count("return"),
                EXCEPTION_SEP: kinds.count("exception"),
                ARG_SEP: kinds.count("return") + kinds.count("exception"), BOS: 1, EOS: 1}
        for token in ALL_SPECIAL_TOKENS:
            assert ids.count(tid(token)) == want.get(token, 0), (record["origin"]["qualname"], token)
        assert parse_trace(trace_segments_from_ids(tokenizer, ids)) == {"context": record["context"],
                                                                       "frames": fields}
    # json round trip of the shard itself keeps every string
    assert all(json.loads(json.dumps(r)) == r for r in records)
