"""A real learning signal: a tiny CWM trained on traces of a small family of functions predicts the next
execution state of *held-out* traces (inputs it never saw) far better than the same model untrained.

The traces come from the real tracer (`tracer.session.trace_call`) running the functions in
`trace_family.py`; the score is exact match of each frame's locals under teacher forcing (cwm.eval).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))

import trace_family  # noqa: E402

STEPS = 300


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    from cwm.data.recipe import load_recipe
    from cwm.data.shards import ShardWriter
    from cwm.data.tokenizer import recipe_texts, train_bpe
    from tracer.session import trace_call

    root = tmp_path_factory.mktemp("family")
    with ShardWriter(root / "traces", "family") as shards:
        for fn in (trace_family.accumulate, trace_family.accumulate_with_helper):
            for n in range(10):
                for step in range(1, 7):
                    record = trace_call(fn, n, step)[-1]
                    assert record["outcome"] == "returned"
                    shards.add([(record["id"], record)])
    recipe = root / "recipe.yaml"
    recipe.write_text(f"""
seq_len: 512
tokenizer: {root / 'tokenizer'}
pack_window_rows: 8
sources:
  family:
    kind: trace
    paths: [{root / 'traces'}]
    weight: 1.0
    holdout: 0.2
    trace: {{depth: 1, step_in_prob: 1.0}}
""")
    train_bpe(recipe_texts(load_recipe(recipe)), 400, root / "tokenizer")
    return {"root": root, "recipe": recipe}


def _heldout_eval(recipe_path):
    from cwm.data.documents import iter_heldout
    from cwm.data.recipe import load_recipe
    from cwm.data.tokenizer import load_tokenizer
    from cwm.eval.world_model import WorldModelEval, examples_from_records

    recipe = load_recipe(recipe_path)
    source = recipe.source("family")
    records = list(iter_heldout(source))
    tokenizer = load_tokenizer(recipe.tokenizer)
    return recipe, tokenizer, WorldModelEval(tokenizer, examples_from_records(records, source), max_len=recipe.seq_len)


def test_tiny_model_learns_to_predict_held_out_traces(family):
    out = family["root"] / "run"
    run = subprocess.run(
        [sys.executable, str(ROOT / "cwm/train.py"), "--recipe", str(family["recipe"]), "--out", str(out),
         "--training.steps", str(STEPS), "--optim.lr", "3e-3", "--optim.warmup_steps", "20", "--log.every", "50",
         "--eval.max_traces", "1000", "--eval.max_outputs", "4", "--eval.max_new_tokens", "300", "--export", "false",
         "--log.tensorboard", "false", "--training.cpu_threads", "1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    final = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    trained = final["eval/next_state_accuracy"]

    # Chance: the same architecture and initialisation, untrained, on the same held-out frames.
    from transformers import CwmForCausalLM

    from cwm.model.config import build_config

    recipe, tokenizer, evaluator = _heldout_eval(family["recipe"])
    torch.manual_seed(0)
    untrained_model = CwmForCausalLM._from_config(build_config(tokenizer, seq_len=recipe.seq_len),
                                                  attn_implementation="sdpa").eval()
    untrained = evaluator.next_state(untrained_model, torch.device("cpu"))
    assert untrained["eval/next_state_frames"] == final["eval/next_state_frames"] > 50
    print(f"held-out next-state exact match over {final['eval/next_state_frames']} frames: "
          f"trained {trained:.3f} vs untrained {untrained['eval/next_state_accuracy']:.3f}; "
          f"output prediction {final['eval/output_accuracy']:.2f} of {final['eval/output_functions']}")
    assert untrained["eval/next_state_accuracy"] < 0.05
    assert trained > 0.3
