"""Context parallelism (`cwm/model/context_parallel.py`): the split, the exchange plan and, across real gloo ranks
under torchrun, attention and a whole model's loss and gradients against the unsplit computation.

Oracles: the dense [T, T] document mask of `cwm_kernels.reference` (which keys each query sees, written out
naively) for the cost model and the exchange plan; the float64 dense-mask attention and a single-process model
run for the distributed checks (tests/train/cp_check.py)."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cwm.model.context_parallel import CPShard, balance_cuts, borrowed_range, visible_keys
from cwm_kernels.reference import document_mask

ROOT = Path(__file__).resolve().parents[2]


def random_row(rng: random.Random, total: int, long_doc: int | None = None) -> list[int]:
    lengths = [] if long_doc is None else [long_doc]
    while sum(lengths) < total:
        lengths.append(min(rng.choice([1, 2, 3, 5, 8, 13, 30]), total - sum(lengths)))
    rng.shuffle(lengths)
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return cu


def dense_area(cu, windows) -> torch.Tensor:
    """Per query: visible keys summed over layers, counted from the dense masks."""
    cu_t = torch.tensor(cu, dtype=torch.int32)
    return sum(document_mask(cu_t, w).sum(1).double() for w in windows)


@pytest.mark.parametrize("seed", range(4))
def test_visible_keys_equal_dense_mask_rows(seed):
    rng = random.Random(seed)
    cu = random_row(rng, 150, long_doc=90)
    windows = [7, None, 7, 7, 40, None]
    assert torch.equal(visible_keys(cu, windows), dense_area(cu, windows))


@pytest.mark.parametrize("cp", [2, 3, 4, 8])
@pytest.mark.parametrize("seed", range(3))
def test_cuts_balance_the_unmasked_area(cp, seed):
    rng = random.Random(seed)
    cu = random_row(rng, 400, long_doc=250)
    windows = [16, 16, 16, None]
    cuts = balance_cuts(cu, cp, windows)
    assert cuts[0] == 0 and cuts[-1] == 400 and all(b > a for a, b in zip(cuts, cuts[1:]))
    area = dense_area(cu, windows)
    per_rank = torch.stack([area[a:b].sum() for a, b in zip(cuts, cuts[1:])])
    naive = torch.stack([area[round(r * 400 / cp):round((r + 1) * 400 / cp)].sum() for r in range(cp)])
    # One token of the long document costs at most 250 + 3 * 16 keys; a share is total / cp.
    slack = (250 + 48) / float(per_rank.mean()) + 0.01  # one token either side, plus the snap tolerance
    assert float(per_rank.max() / per_rank.mean()) <= 1 + slack
    assert float(per_rank.max() / per_rank.mean()) < float(naive.max() / naive.mean())


def test_a_cut_near_a_document_boundary_moves_onto_it():
    cu = [0, 50, 100]  # two equal documents: the balanced cut is their boundary, and nothing is exchanged
    cuts = balance_cuts(cu, 2, [None])
    assert cuts == [0, 50, 100]
    assert CPShard(cu, cuts, 1).exchanged_rows([None, 4]) == 0


@pytest.mark.parametrize("window", [None, 1, 3, 12, 1000])
@pytest.mark.parametrize("seed", range(3))
def test_borrowed_rows_are_exactly_the_keys_other_ranks_hold(window, seed):
    """For every rank: the keys its queries see (dense mask) that lie outside its range are [lo, start)."""
    rng = random.Random(seed)
    cu = random_row(rng, 120, long_doc=70)
    mask = document_mask(torch.tensor(cu, dtype=torch.int32), window)
    for cuts in (balance_cuts(cu, 4, [window]), [0, 30, 60, 90, 120], [0, 1, 2, 119, 120]):
        for rank in range(4):
            start, end = cuts[rank], cuts[rank + 1]
            seen = torch.nonzero(mask[start:end].any(0)).flatten().tolist()
            outside = [j for j in seen if not start <= j < end]
            lo, hi = borrowed_range(cu, cuts, rank, window)
            assert outside == list(range(lo, hi)), (cuts, rank)


def test_bad_input_says_what_is_wrong():
    with pytest.raises(ValueError, match="at least 4 tokens"):
        balance_cuts([0, 2, 3], 4, [None])
    with pytest.raises(ValueError, match="cu_seqlens must rise"):
        balance_cuts([0, 5, 3], 2, [None])
    with pytest.raises(ValueError, match="cuts must rise strictly"):
        CPShard([0, 10], [0, 5, 5, 10], 0)


def test_one_rank_is_plain_packed_attention():
    from cwm_kernels import packed_attention

    cu = [0, 5, 40, 41, 64]
    q, k, v = torch.randn(64, 4, 8), torch.randn(64, 2, 8), torch.randn(64, 2, 8)
    out = CPShard(cu, [0, 64], 0).attention(q, k, v, 9, None)
    want = packed_attention(q, k, v, torch.tensor(cu, dtype=torch.int32), 35, window=9)
    assert torch.equal(out, want)


def torchrun(nproc: int, mode: str, *extra: str) -> str:
    argv = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", str(nproc),
            str(ROOT / "tests/train/cp_check.py"), mode, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


@pytest.mark.parametrize("nproc", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_attention_across_ranks_equals_the_unsplit_reference(nproc):
    out = torchrun(nproc, "attention")
    lines = [line for line in out.splitlines() if line.startswith("ok attention")]
    print("\n".join(lines[:6]))
    assert len(lines) == 4 * 4 * 2  # rows x windows x (balanced, equal-token) cuts
    # The split really crossed documents: some cases exchanged K/V, and the balanced whole-document row did not.
    assert any("KV rows exchanged 0" not in line for line in lines)


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [2, 4])
def test_model_loss_and_every_gradient_equal_the_one_rank_run(nproc):
    """CP 2: gradients summed by hand and through FSDP2 + activation checkpointing; CP 4: the latter (time)."""
    out = torchrun(nproc, "step", *(["--fsdp-only"] if nproc == 4 else []))
    lines = [line for line in out.splitlines() if line.startswith("ok step")]
    print("\n".join(lines))
    assert len(lines) == (2 if nproc == 2 else 1) * 2 * 4  # variants x windows x rows


def train_run(recipe: Path, out: Path, nproc: int, *extra: str) -> list[tuple[float, float]]:
    """(loss, gradient norm) per step from metrics.jsonl."""
    args = [str(ROOT / "cwm/train.py"), "--recipe", str(recipe), "--out", str(out), "--training.steps", "4",
            "--optim.lr", "5e-3", "--optim.warmup_steps", "2", "--log.every", "1", "--log.tensorboard", "false",
            *extra]
    launcher = ([str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", str(nproc)]
                if nproc > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run(launcher + args, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    import json

    records = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    return [(r["loss"], r["grad_norm"]) for r in records if "loss" in r]


@pytest.mark.slow
def test_train_py_with_cp_2_logs_the_losses_of_one_process_and_resumes(jsonl_recipe, tmp_path):
    """`torchrun --nproc-per-node 2 cwm/train.py --parallel.cp 2` (one DP group: both ranks read the same rows)
    logs the losses and gradient norms (before clipping: a mis-scaled gradient shows there first) of the same run
    in one process, also when stopped after 2 steps and resumed (fp32: the split changes only summation order;
    observed relative differences ~1e-8); the exported Hugging Face weights match too."""
    from safetensors.torch import load_file

    recipe = jsonl_recipe(seq_len=96)
    one = train_run(recipe, tmp_path / "one", 1)
    train_run(recipe, tmp_path / "cp", 2, "--parallel.cp", "2", "--training.stop_after", "2", "--export", "false")
    split = train_run(recipe, tmp_path / "cp", 2, "--parallel.cp", "2")
    print(f"1 process: {one}\nCP 2 (resumed at 2): {split}")
    assert len(one) == len(split) == 4
    assert [x for pair in split for x in pair] == pytest.approx([x for pair in one for x in pair], rel=1e-5)
    want, got = (load_file(tmp_path / run / "hf" / "model.safetensors") for run in ("one", "cp"))
    assert sorted(want) == sorted(got)
    for name in want:  # AdamW's 1/sqrt(v) amplifies fp32 noise where a gradient is ~0: observed 6.6e-6 at most,
        # against updates of up to lr x steps = 2e-2
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=5e-5, msg=name)


@pytest.mark.slow
def test_train_py_dp_2_x_cp_2_logs_the_losses_of_dp_2(jsonl_recipe, tmp_path):
    """4 ranks as (dp 2, cp 2): each DP group's two CP ranks read the same rows (the loader per DP group, CP ranks
    consecutive in the mesh), so the run logs what 2 plain data-parallel ranks log."""
    recipe = jsonl_recipe(seq_len=96)
    steps = ["--training.steps", "2", "--export", "false"]
    dp = train_run(recipe, tmp_path / "dp2", 2, *steps)
    both = train_run(recipe, tmp_path / "dp2cp2", 4, *steps, "--parallel.cp", "2")
    print(f"dp 2: {dp}\ndp 2 x cp 2: {both}")
    assert len(dp) == len(both) == 2
    assert [x for pair in both for x in pair] == pytest.approx([x for pair in dp for x in pair], rel=1e-5)


def test_train_py_rejects_a_cp_that_does_not_divide_the_ranks(jsonl_recipe):
    recipe = jsonl_recipe(seq_len=96)
    run = subprocess.run([sys.executable, str(ROOT / "cwm/train.py"), "--recipe", str(recipe), "--parallel.cp", "2"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 2
    assert "--parallel.cp 2 must divide the 1 rank(s)" in run.stderr


@pytest.mark.slow
def test_plan_covers_context_parallelism_for_131k_rows():
    """`--plan` for the 8b and cwm-32b presets on 131k rows (data_recipes/cwm.yaml) lists CP 1/2/4/8 per device;
    splitting a row shrinks the memory per device, and a row too big for one device gets --parallel.cp advice."""
    import re

    for preset in ("8b", "cwm-32b"):
        run = subprocess.run([sys.executable, str(ROOT / "cwm/train.py"), "--recipe", str(ROOT / "data_recipes/cwm.yaml"),
                              "--plan", "--plan.devices", "8", "--plan.device_gb", "141", "--training.device", "cuda",
                              "--model.preset", preset], capture_output=True, text=True, timeout=300, cwd=ROOT,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert run.returncode == 0, run.stderr[-2000:]
        print(run.stdout)
        rows = re.findall(r"CP (\d) on +(\d+) devices +([\d.]+) GB without checkpointing, ([\d.]+) GB with", run.stdout)
        assert [int(r[0]) for r in rows] == [1, 2, 4, 8] and "rows of 131072 tokens" in run.stdout
        for column in (2, 3):
            values = [float(r[column]) for r in rows]
            assert all(b < a for a, b in zip(values, values[1:])), (preset, values)
    # cwm-32b at 131k on 8 x 141 GB: one row does not fit one device even with checkpointing; the plan says how.
    assert "split each row over 4 devices (--parallel.cp 4)" in run.stdout
