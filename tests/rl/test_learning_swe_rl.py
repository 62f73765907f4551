"""GRPO learns from SWE-RL's similarity reward: the real trainer (cwm/rl/train.py) on the `swe_rl` environment.

The task family: a repository of two files, `a.py` holding `a = 0` and `b.py` holding `b = 0`; the issue says
"Set b to 7." (18 tasks: two files, digits 1-9). The oracle changes one line of one file. A tiny random model
cannot write an edit block by chance, so it is first taught the answer *format* by 200 supervised steps on
answers that pick the file and digit at random, ignoring the issue (as a mid-trained model knows the format but
not the fix). A well-formed answer then scores about 0.45 on average (the wrong file 0: the union of files holds
two, each changed by one side only; the right file ~0.96 with a wrong digit, 1.0 with the right one), a
malformed one -1, and about a third are still malformed: the first steps average -0.2 to -0.35. RL must make the
format reliable and read the issue: the mean reward of the last 4 steps is asserted to beat the first 2 steps'
by MARGIN within STEPS (seeds 0 and 1 gave +0.48 and +0.51 at step 24 on the 2-core test machine).
"""
import json
import random

import pytest
import torch
import yaml

from cwm.data.edits import format_edit_blocks
from cwm.forager.tasks import Task, write_tasks
from cwm.rl.envs.swe_rl import task_prompt
from cwm.rl.recipe import load_recipe
from cwm.rl.rollout import ChatFormat
from cwm.rl.train import train
from rl_helpers import export_model, small_tokenizer, tiny_model

STEPS = 30
MARGIN = 0.25          # last 4 steps' mean reward over the first 2 steps'
# the edit-block scaffolding as single tokens (a tokenizer built for the test), so an answer is 12 tokens
PIECES = ("<solution>\n```python\n### ", ".py\n<<<<<<< SEARCH\n", " = ", "\n=======\n",
          "\n>>>>>>> REPLACE\n```\n</solution>")


def family() -> list[Task]:
    tasks = []
    for name in "ab":
        for digit in range(1, 10):
            start = {"a.py": "a = 0\n", "b.py": "b = 0\n"}
            tasks.append(Task(id=f"{name}{digit}", kind="pr-history", repo="toy", commit=None, image="",
                              statement=f"Set {name} to {digit}.", fail_to_pass=[], pass_to_pass=[], mutation=None,
                              start_files=start, fix_files={f"{name}.py": f"{name} = {digit}\n"}))
    return tasks


def answer(name: str, digit: int) -> str:
    return format_edit_blocks({f"{name}.py": [(f"{name} = 0", f"{name} = {digit}")]})


def warm_start_format(model, tok, tasks, steps: int = 200, seed: int = 0) -> float:
    """Supervised steps on (prompt, answer with a random file and digit): the format, not the fix. Returns the
    last loss."""
    chat = ChatFormat(tok)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    loss = None
    for _ in range(steps):
        rows = []
        for task in rng.sample(tasks, 8):
            prompt = chat.encode(task_prompt(task.statement, task.start_files), first=True)
            reply = tok.encode(answer(rng.choice("ab"), rng.randint(1, 9)), add_special_tokens=False) + [chat.eot_id]
            rows.append((prompt, reply))
        width = max(len(p) + len(r) for p, r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id)
        labels = torch.full((len(rows), width), -100)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (p, r) in enumerate(rows):
            ids[i, :len(p) + len(r)] = torch.tensor(p + r)
            labels[i, len(p):len(p) + len(r)] = torch.tensor(r)
            attn[i, :len(p) + len(r)] = 1
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_grpo_raises_swe_rl_similarity_reward(tmp_path):
    tasks = family()
    write_tasks(tasks, tmp_path / "tasks.jsonl")
    texts = [m["content"] for t in tasks for m in task_prompt(t.statement, t.start_files)]
    tok = small_tokenizer(texts + [answer("a", 1), "system user assistant"], pieces=PIECES)
    model = tiny_model(tok, seed=0)
    sft_loss = warm_start_format(model, tok, tasks)
    export_model(model, tok, tmp_path / "init")
    recipe = {"init": str(tmp_path / "init"), "out": str(tmp_path / "rl"), "steps": STEPS, "seed": 0,
              "groups_per_step": 6, "group_size": 8, "checkpoint_every": 0,
              "optim": {"lr": 1e-3, "weight_decay": 0.0},
              "grpo": {"token_budget": 600, "max_staleness": 1},
              "rollout": {"max_len": 512, "sampling": {"max_new_tokens": 16, "temperature": 1.0}},
              "envs": [{"kind": "swe_rl", "tasks": str(tmp_path / "tasks.jsonl"), "reward": {"mode": "similarity"}}]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    train(load_recipe(str(tmp_path / "recipe.yaml")), progress=False)

    steps = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    rewards = [m["mean_reward"] for m in steps]
    first, last = sum(rewards[:2]) / 2, sum(rewards[-4:]) / 4
    print(f"format warm-start loss {sft_loss:.3f}; swe_rl mean reward: first 2 steps {first:+.3f}, "
          f"last 4 of {STEPS} {last:+.3f}; per step {[round(r, 2) for r in rewards]}")
    assert [m["step"] for m in steps] == list(range(1, STEPS + 1))
    assert "mean_reward/swe_rl" in steps[0]
    assert last >= first + MARGIN, [round(r, 2) for r in rewards]
