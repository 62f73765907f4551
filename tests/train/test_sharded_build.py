"""Sharded construction: `torchrun --nproc-per-node 2 cwm/train.py --model.init DIR` (gloo) on a model whose fp32
weights (~1.4 GB) dominate a process. Each rank builds on the meta device, shards, materialises its half and
reads its rows of each parameter from the safetensors; its peak RSS must stay well below what holding the
whole model would take (measured: the trainer prints RSS before materialising and the peak after loading)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from stand_ins import one_source_recipe

ROOT = Path(__file__).resolve().parents[2]

MAKE_MODEL = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_pretrained import _texts, _tokenizer
from transformers import LlamaConfig, LlamaForCausalLM
tok = _tokenizer(_texts())
config = LlamaConfig(vocab_size=len(tok), hidden_size=2048, intermediate_size=5632, num_hidden_layers=8,
                     num_attention_heads=16, num_key_value_heads=4, head_dim=128, eos_token_id=tok.eos_token_id,
                     max_position_embeddings=256)
torch.manual_seed(0)
with torch.device("meta"):
    model = LlamaForCausalLM(config)
model.to_empty(device="cpu")
for p in model.parameters():
    p.data.normal_(0, 0.02)
model.save_pretrained({folder!r})
tok.save_pretrained({folder!r})
"""


@pytest.mark.slow
def test_two_ranks_never_hold_the_whole_model(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    folder = tmp_path / "big"
    made = subprocess.run([sys.executable, "-c", MAKE_MODEL.format(tests=str(Path(__file__).parent), folder=str(folder))],
                          capture_output=True, text=True, timeout=600, env=env)
    assert made.returncode == 0, made.stderr[-2000:]
    weights_gb = (folder / "model.safetensors").stat().st_size / 2**30
    recipe = one_source_recipe(tmp_path, [f"doc {i}: x = y + total" for i in range(64)], seq_len=64, window=2)
    run = subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "2",
                          str(ROOT / "cwm/train.py"), "--recipe", str(recipe), "--model.init", str(folder),
                          "--out", str(tmp_path / "run"), "--training.steps", "0", "--export", "false",
                          "--log.tensorboard", "false"],
                         capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    built = re.findall(r"rank (\d): built the model, RSS ([\d.]+) GB before, peak ([\d.]+) GB after "
                       r"\(([\d.]+) GB of fp32 parameters in all\)", run.stdout)
    assert sorted(r for r, *_ in built) == ["0", "1"], run.stdout[-2000:]
    for rank, before, peak, full in built:
        before, peak, full = float(before), float(peak), float(full)
        added = peak - before
        print(f"rank {rank}: RSS {before:.2f} GB before materialising, peak {peak:.2f} GB after loading: "
              f"+{added:.2f} GB for a {full:.2f} GB model ({weights_gb:.2f} GB on disk)")
        assert full > 1.0
        assert added < 0.7 * full  # its half (0.5) and one parameter's slice in flight, never the whole model
