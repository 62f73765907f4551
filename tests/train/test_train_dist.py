"""`torchrun --nproc-per-node 2 cwm/train.py` on CPU (gloo, FSDP2): the loss falls, a resumed run repeats the
uninterrupted one exactly, and the exported Hugging Face folder holds the trained weights, loads and generates."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
STEPS = 12


def _torchrun(recipe: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "2",
            str(ROOT / "cwm/train.py"), "--recipe", str(recipe), "--out", str(out),
            "--training.steps", str(STEPS), "--optim.lr", "5e-3", "--optim.warmup_steps", "2", "--log.every", "1",
            "--log.tensorboard", "false", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if "loss" in r}


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """One uninterrupted 2-rank run, and one stopped at step 5 then resumed to the end."""
    root = tmp_path_factory.mktemp("dist")
    recipe = root / "recipe.yaml"
    recipe.write_text(f"""
seq_len: 96
tokenizer: {corpus['tokenizer']}
pack_window_rows: 4
sources:
  alpha: {{kind: jsonl, paths: ["{corpus['root']}/alpha/*.jsonl"], weight: 0.7}}
  beta: {{kind: jsonl, paths: ["{corpus['root']}/beta/*.jsonl"], weight: 0.3}}
""")
    straight = _torchrun(recipe, root / "straight")
    _torchrun(recipe, root / "resumed", "--training.stop_after", "5", "--export", "false")
    resumed = _torchrun(recipe, root / "resumed")
    return {"root": root, "recipe": recipe, "straight": straight, "resumed": resumed}


def test_two_rank_loss_falls(runs):
    losses = _losses(runs["root"] / "straight")
    assert sorted(losses) == list(range(1, STEPS + 1))
    first, last = sum(losses[s] for s in (1, 2, 3)) / 3, sum(losses[s] for s in (STEPS - 2, STEPS - 1, STEPS)) / 3
    print(f"loss {first:.3f} -> {last:.3f}")
    assert last < first - 0.5
    assert "2 rank(s) on cpu" in runs["straight"].stdout


def test_resumed_run_repeats_the_uninterrupted_one(runs):
    assert "resumed from" in runs["resumed"].stdout
    straight, resumed = _losses(runs["root"] / "straight"), _losses(runs["root"] / "resumed")
    assert sorted(resumed) == list(range(1, STEPS + 1))  # every step logged once
    assert [resumed[s] for s in range(1, STEPS + 1)] == [straight[s] for s in range(1, STEPS + 1)]


def test_export_holds_the_trained_weights_and_generates(runs):
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = runs["root"] / "straight"
    hf = out / "hf"
    model = AutoModelForCausalLM.from_pretrained(hf)
    tok = AutoTokenizer.from_pretrained(hf)
    # Oracle: the final DCP checkpoint, converted with torch's own tool.
    final = sorted((out / "checkpoints").glob("step-*"))[-1]
    dcp_to_torch_save(final, runs["root"] / "final.pt")
    saved = torch.load(runs["root"] / "final.pt", weights_only=False)["model"]
    exported = model.state_dict()
    assert set(saved) == set(exported)
    for name, tensor in saved.items():
        assert torch.equal(exported[name], tensor), name
    prompt = tok("alpha 3:", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    text = tok.decode(generated[0][prompt["input_ids"].shape[1]:])
    print("generated:", repr(text))
    assert generated.shape[1] > prompt["input_ids"].shape[1]
    words = text.split()
    corpus_words = {"def", "return", "for", "in", "range", "if", "else", "x", "y", "total", "+", "=", "(", ")", ":"}
    assert words and sum(w in corpus_words for w in words) >= len(words) / 2  # it writes the corpus' words


def test_two_rank_run_logs_each_sources_tokens(runs, corpus):
    """`tokens/NAME` in metrics.jsonl, summed over a run's lines, is what the two ranks' loaders fed from that source:
    every position whose target is one of its tokens (a row's first token is no target). Replayed here from the
    loader of each rank, the same rows the trainer read."""
    from cwm.data.loader import PackedLoader
    from cwm.data.recipe import load_recipe

    rows = [json.loads(line) for line in (runs["root"] / "straight" / "metrics.jsonl").read_text().splitlines()]
    logged = {n: sum(r.get(f"tokens/{n}", 0) for r in rows) for n in ("alpha", "beta")}
    want = {"alpha": 0, "beta": 0}
    recipe = load_recipe(runs["recipe"])
    for rank in (0, 1):
        batches = iter(PackedLoader(recipe, corpus["tokenizer"], rank=rank, world=2))
        for _ in range(STEPS):
            src = next(batches)["source_ids"][0, 1:]
            for i, name in enumerate(s.name for s in recipe.sources):
                want[name] += int((src == i).sum())
    print(f"tokens per source: {logged}")
    assert logged == want and min(logged.values()) > 0
