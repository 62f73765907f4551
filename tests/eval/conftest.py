"""Fixtures of the cwm-eval tests: a tokenizer that knows the trace tokens and a tiny random model folder, both
made here from the bundled samples (nothing is downloaded)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "cwm" / "eval" / "samples"


@pytest.fixture(autouse=True)
def _few_threads(one_torch_thread):
    """Two shared cores: one intra-op thread per test (tests/conftest.py)."""


@pytest.fixture(scope="session")
def eval_tokenizer_dir(tmp_path_factory):
    """A byte-level BPE (cwm-tokenizer's) learnt on the bundled samples and their traces."""
    from cwm.data.tokenizer import train_bpe
    from cwm.eval.execute import trace_function
    from tracer.format import render_trace

    texts = []
    for line in (SAMPLES / "cruxeval.jsonl").read_text().splitlines():
        ex = json.loads(line)
        record = trace_function(ex["code"], "f", ex["input"])
        texts += [ex["code"], ex["output"], render_trace(record)]
    texts += [json.loads(line)["prompt"] for line in (SAMPLES / "humaneval.jsonl").read_text().splitlines()]
    out = tmp_path_factory.mktemp("eval-tokenizer")
    train_bpe(texts * 3, 512, out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(eval_tokenizer_dir, tmp_path_factory):
    """The 'tiny' preset (head_dim 32: vLLM's CPU attention serves it), random weights, saved as an HF folder."""
    import torch
    from transformers import AutoTokenizer, CwmForCausalLM

    from cwm.model.config import build_config

    tok = AutoTokenizer.from_pretrained(str(eval_tokenizer_dir))
    torch.manual_seed(0)
    model = CwmForCausalLM(build_config(tok, preset="tiny", seq_len=1024))
    model.generation_config.pad_token_id = tok.pad_token_id
    out = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out
