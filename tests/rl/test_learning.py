"""GRPO learns: a tiny random model on a toy verifiable task, trained by the real trainer (cwm/rl/train.py).

The task is output prediction of `f(x) = x % 2` for x in 0..9, answered in one token. The untrained model
spreads its probability over a 64-symbol vocabulary, so it is right about 1 time in 64 (mean reward ≈ -0.97).
The learning must first find the two digits, then read x from the prompt to tell them apart: a mean reward
near 0 means "guesses 0 or 1"; near +1 means the model uses the context. Each step draws all ten tasks once
(ten groups of eight), so no step's batch favours one answer and the policy does not collapse onto a constant
(after which every group is all +1 or all -1, zero advantage, and learning stops).
"""
import json

import pytest
import yaml

from rl_helpers import small_tokenizer, chat_texts, export_model, function_records, tiny_model, write_shards
from cwm.rl.envs.output_prediction import task_from_record
from cwm.rl.recipe import load_recipe
from cwm.rl.train import train

SOURCE = "def f(x):\n    return x % 2\n"
STEPS = 36
RANDOM_AT_MOST = -0.8        # mean reward of the first batch, sampled from the untrained model
LEARNED_AT_LEAST = 0.5       # mean reward over the last 5 steps (pass rate >= 75%)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_grpo_raises_reward_well_above_random_policy(tmp_path):
    records = function_records(SOURCE, "f", list(range(10)))
    tok = small_tokenizer(chat_texts([task_from_record(r) for r in records]))
    export_model(tiny_model(tok, seed=0), tok, tmp_path / "init")
    write_shards(tmp_path / "traces", records)
    recipe = {"init": str(tmp_path / "init"), "out": str(tmp_path / "rl"), "steps": STEPS, "seed": 0,
              "groups_per_step": 10, "group_size": 8, "checkpoint_every": 0,
              "optim": {"lr": 1e-2, "weight_decay": 0.0},
              "grpo": {"token_budget": 80, "max_staleness": 1},
              "rollout": {"max_len": 512, "sampling": {"max_new_tokens": 1, "temperature": 1.0}},
              "envs": [{"kind": "output_prediction", "shards": str(tmp_path / "traces")}]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    train(load_recipe(str(tmp_path / "recipe.yaml")), progress=False)

    steps = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps] == list(range(1, STEPS + 1))
    random_policy = steps[0]["mean_reward"]
    learned = sum(m["mean_reward"] for m in steps[-5:]) / 5
    print(f"mean reward: untrained policy {random_policy:+.3f}, last 5 of {STEPS} steps {learned:+.3f} "
          f"(pass rate {steps[0]['pass_rate']:.3f} -> {steps[-1]['pass_rate']:.3f})")
    assert random_policy <= RANDOM_AT_MOST
    assert learned >= LEARNED_AT_LEAST, [round(m["mean_reward"], 2) for m in steps]
    assert max(m["staleness_max"] for m in steps) <= 1
