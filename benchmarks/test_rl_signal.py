"""Issue 22's figures: denser learning signal and search, each against its baseline in the same run, fixed seeds.

- curriculum by pass rate vs the shuffled cycle: share of GRPO groups with a non-zero advantage, steps until the
  learnable tasks' expected reward reaches 0 (tiny model, a family of 8 always-solved, 8 never-solved and 4
  learnable tasks), per seed;
- best-of-n with CodeT's dual agreement vs the first sample, at the same n (12 code-generation tasks, a fixture
  policy sampling the reference or forager mutants of it), with pass@n for the ceiling;
- the reward model's held-out AUC vs the length-only and turn-count baselines;
- tree search over agent turns vs independent episodes at the same budget of policy turns, on forager mutate-fix
  tasks (two bugs each) of the demo repository in the local sandbox.

    .venv/bin/python -m pytest benchmarks/test_rl_signal.py -s -q          # about 15 min on 2 shared cores

The experiments themselves live in tests/rl/signal_helpers.py, shared with the asserting tests in tests/rl/.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "rl"))


def machine() -> str:
    import os
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores, 1 torch thread, torch {torch.__version__}, no GPU used"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_curriculum_vs_uniform():
    from signal_helpers import run_curriculum

    steps, target = 30, 0.0
    print(f"\ncurriculum vs shuffled cycle, {steps} steps of 4 groups x 8, target expected reward {target:+.1f} "
          f"on the learnable tasks ({machine()})")
    print("seed | signal groups uniform | curriculum | steps to target uniform | curriculum | learnable groups "
          "uniform | curriculum")
    totals = {False: [0.0, 0, 0], True: [0.0, 0, 0]}
    for seed in range(4):
        runs = {c: run_curriculum(c, seed=seed, steps=steps) for c in (False, True)}
        cells = []
        for c in (False, True):
            r = runs[c]
            sig = sum(r.signal_fracs) / len(r.signal_fracs)
            reach = r.steps_to(target) or steps + 1
            totals[c][0] += sig / 4
            totals[c][1] += reach
            totals[c][2] += r.learnable_groups
            cells.append((sig, reach, r.learnable_groups))
        print(f"{seed} | {cells[0][0]:.3f} | {cells[1][0]:.3f} | {cells[0][1]} | {cells[1][1]} | {cells[0][2]} | "
              f"{cells[1][2]}")
    print(f"mean | {totals[False][0]:.3f} | {totals[True][0]:.3f} | {totals[False][1] / 4:.1f} | "
          f"{totals[True][1] / 4:.1f} | {totals[False][2] / 4:.0f} | {totals[True][2] / 4:.0f}")


def test_best_of_n_vs_first_sample():
    from signal_helpers import FixturePolicy, codegen_set
    from cwm.rl.search import extract_code, pass_matrix, search_codegen

    tasks = codegen_set()
    n = 8
    print(f"\nbest-of-{n} (CodeT dual agreement, one reply of generated tests per task) vs first sample, "
          f"{len(tasks)} tasks ({machine()})")
    print("seed | pass@1 first sample | pass@1 dual agreement | pass@n (any candidate) | s")
    for seed in range(3):
        t0 = time.monotonic()
        rows = search_codegen(tasks, FixturePolicy(seed), n=n, m=8, mode="best-of-n")
        # pass@n: the same candidates regenerated from the same seed, every one graded by the hidden tests
        policy, any_pass = FixturePolicy(seed), 0
        for task in tasks:
            codes = [extract_code(r) for r in policy(task.messages(), n)]
            policy([{"role": "user", "content": f"Write {n} different assert statements ... `{task.entry}`"}], 1)
            any_pass += any(all(row) for row in pass_matrix(codes, list(task.tests)))
        first = sum(r["first_passed"] for r in rows) / len(rows)
        chosen = sum(r["chosen_passed"] for r in rows) / len(rows)
        print(f"{seed} | {first:.3f} | {chosen:.3f} | {any_pass / len(tasks):.3f} | {time.monotonic() - t0:.0f}")


def test_reward_model_auc():
    from rl_helpers import export_model, small_tokenizer, tiny_model
    from signal_helpers import write_codegen_samples
    from cwm.rl.reward_model import load_examples, train

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        write_codegen_samples(d / "samples", seed=0, per_task=20)
        examples = load_examples([str(d / "samples")])
        tok = small_tokenizer([e.text for e in examples])
        export_model(tiny_model(tok, seed=0), tok, d / "init")
        t0 = time.monotonic()
        report = train(examples, str(d / "init"), d / "rm", epochs=20, lr=1e-3)
    print(f"\nreward model (tiny CWM from random weights, 20 epochs, {report['train']} train / "
          f"{report['held_out']} held out, {report['held_out_passed']} of those pass; {machine()}, "
          f"{time.monotonic() - t0:.0f} s)")
    print(f"held-out AUC: reward model {report['auc']:.3f} | length only {report['auc_length']:.3f} | "
          f"turn count {report['auc_turns']:.3f}")


def test_tree_search_vs_independent_episodes():
    from signal_helpers import FixtureAgent, calc_env_maker, calc_tasks
    from cwm.rl.search import independent_episodes, tree_search

    budget, depth, seeds = 16, 12, (0, 1, 2, 3)
    with tempfile.TemporaryDirectory() as d:
        repo = Path(d) / "calc"
        tasks = calc_tasks(repo)
        print(f"\ntree search (best-first, branch 3, value = pass fraction of the last test run, unknown = 1) vs "
              f"independent episodes, at most {budget} policy turns per task, local sandbox ({machine()})")
        print("seed | task | independent: resolved, turns used, s | tree: resolved, turns used, nodes expanded, s")
        wins = {"indep": [0, 0], "tree": [0, 0]}  # resolved, turns used over all
        for seed in seeds:
            for task in tasks:
                make = calc_env_maker(task, repo)
                t0 = time.monotonic()
                a = independent_episodes(make, FixtureAgent(seed), budget=budget, max_depth=depth)
                t1 = time.monotonic()
                b = tree_search(make, FixtureAgent(seed), budget=budget, branch=3, max_depth=depth)
                t2 = time.monotonic()
                for key, r in (("indep", a), ("tree", b)):
                    wins[key][0] += r.resolved
                    wins[key][1] += r.turns_sampled
                print(f"{seed} | {task.id} | {a.resolved}, {a.turns_sampled}, {t1 - t0:.0f} | {b.resolved}, "
                      f"{b.turns_sampled}, {b.nodes_expanded}, {t2 - t1:.0f}")
        n = len(seeds) * len(tasks)
        print(f"resolved: independent {wins['indep'][0]}/{n} ({wins['indep'][1]} turns), tree search "
              f"{wins['tree'][0]}/{n} ({wins['tree'][1]} turns)")
