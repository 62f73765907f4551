"""The trainer's in-training evaluation is cwm-eval's code: the same numbers as `cwm-eval trace-prediction` on the
same traces, and under torchrun (2 ranks, FSDP2) the examples split across ranks give the single-process result."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cwm.eval.backends import HFBackend, SamplingParams
from cwm.eval.trace_prediction import TracePrediction
from cwm.eval.trace_text import prompt_end
from cwm.eval.world_model import TraceExample, WorldModelEval

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def examples():
    from cwm.eval.cli import SAMPLES, traced_examples

    return traced_examples(str(SAMPLES / "cruxeval.jsonl"), 2, None)


def test_in_training_eval_equals_cwm_eval(tiny_model_dir, examples):
    backend = HFBackend(tiny_model_dir)
    suite = TracePrediction(max_len=1024)
    rows = suite.run(backend, examples, SamplingParams(max_tokens=40))
    summary = suite.summary(rows)
    evaluator = WorldModelEval(backend.tokenizer, [TraceExample(e["text"], e["value"], e["raised"]) for e in examples],
                               max_len=1024, max_new_tokens=40, max_outputs=100, batch_size=3)
    got = evaluator.next_state(backend.model, torch.device("cpu"))
    assert got["eval/next_state_frames"] == summary["next_state_frames"] > 50
    assert got["eval/next_state_accuracy"] == summary["next_state_accuracy"]
    # generation: batched with the entry-return stop, the same answers as cwm-eval's unbatched continuations
    prompts = [evaluator.encode(e["text"][:prompt_end(e["text"])]) for e in examples]
    batched = evaluator.generate_traces(backend.model, prompts, torch.device("cpu"))
    for ids, row in zip(batched, rows):
        text = backend.tokenizer.decode(ids, skip_special_tokens=False)
        assert row["answer"].startswith(text.rstrip("\ufffd")), row["id"]   # the stop may fall mid-character
    out = evaluator.output_prediction(backend.model, torch.device("cpu"))
    assert out["eval/output_functions"] == len(examples)
    assert out["eval/output_accuracy"] == summary["generation/result_accuracy"]


@pytest.mark.slow
def test_two_ranks_split_the_examples_and_agree(tiny_model_dir, examples, tmp_path):
    path = tmp_path / "examples.json"
    path.write_text(json.dumps([{"text": e["text"], "value": e["value"], "raised": e["raised"]} for e in examples]))
    torchrun = str(Path(sys.executable).parent / "torchrun")
    run = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(ROOT / "tests/eval/dist_eval_job.py"),
                          str(tiny_model_dir), str(path), str(tmp_path)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    backend = HFBackend(tiny_model_dir)
    evaluator = WorldModelEval(backend.tokenizer, [TraceExample(**e) for e in json.loads(path.read_text())],
                               max_len=1024, max_new_tokens=40, max_outputs=5, batch_size=2)
    alone = {**evaluator.next_state(backend.model, torch.device("cpu")),
             **evaluator.output_prediction(backend.model, torch.device("cpu"))}
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    for key, value in alone.items():
        assert ranks[0]["metrics"][key] == pytest.approx(value, abs=1e-9), key
    # each rank generated its own share (one has a padding repeat it does not count), as one process does
    shares = [ranks[0]["prompts"], ranks[1]["prompts"]]
    assert len(shares[0]) + len(shares[1]) == 5 and not set(shares[0]) & set(shares[1])
    for rank in ranks:
        for text, ids in zip(rank["prompts"], rank["generated"]):
            assert evaluator.generate_trace(backend.model, evaluator.encode(text[:prompt_end(text)]),
                                            torch.device("cpu")) == ids
