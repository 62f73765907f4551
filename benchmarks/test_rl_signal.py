"""Issue 22's figures: denser learning signal and search, each against its baseline in the same run, fixed seeds.

- curriculum by pass rate vs the shuffled cycle: share of GRPO groups with a non-zero advantage, steps until the
  learnable tasks' expected reward reaches 0 (tiny model, a family of 8 always-solved, 8 never-solved and 4
  learnable tasks), per seed;
- best-of-n with CodeT's dual agreement vs the first sample, at the same n (12 code-generation tasks, a fixture
  policy sampling the reference or forager mutants of it), with pass@n for the ceiling;
- the reward model's held-out AUC vs the length-only and turn-count baselines;
- tree search over agent turns vs independent episodes at the same budget of policy turns, on forager mutate-fix
  tasks (two and three bugs each) of the demo repository in the local sandbox; and GRPO groups made by the
  tree (the RL switch `search: {mode: tree}`) vs groups of independent episodes: groups with signal.

    .venv/bin/python -m pytest benchmarks/test_rl_signal.py -s -q          # about 25 min on 2 shared cores

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

    depth, seeds = 12, range(8)
    arms = {"independent": None, "tree, unknown 1.0": 1.0, "tree, unknown 0.5": 0.5}
    with tempfile.TemporaryDirectory() as d:
        repo = Path(d) / "calc"
        print(f"\ntree search (best-first with progressive widening, branch 3, value = pass fraction of the last "
              f"test run) vs independent episodes at the same budget of policy turns, local sandbox ({machine()}); "
              f"the agent's seed is seed x 100 + task index, the same for every arm")
        print("bugs | budget | tasks x seeds | " + " | ".join(f"{a}: resolved, turns" for a in arms) + " | s")
        for bugs, budget in ((2, 16), (3, 24)):
            tasks = calc_tasks(repo, bugs=bugs)
            totals = {a: [0, 0] for a in arms}
            t0 = time.monotonic()
            for seed in seeds:
                for i, task in enumerate(tasks):
                    make = calc_env_maker(task, repo)
                    for arm, unknown in arms.items():
                        agent = FixtureAgent(seed * 100 + i)
                        if unknown is None:
                            r = independent_episodes(make, agent, budget=budget, max_depth=depth)
                        else:
                            r = tree_search(make, agent, budget=budget, branch=3, max_depth=depth,
                                            unknown_value=unknown)
                        totals[arm][0] += r.resolved
                        totals[arm][1] += r.turns_sampled
            n = len(tasks) * len(seeds)
            print(f"{bugs} | {budget} | {len(tasks)} x {len(seeds)} | "
                  + " | ".join(f"{r}/{n}, {t}" for r, t in totals.values()) + f" | {time.monotonic() - t0:.0f}")


def test_tree_groups_vs_independent_groups():
    """The search as an RL rollout generator: a GRPO group is the episodes one tree ended (`tree_search` with
    `episodes=group`: the message-level twin of `cwm.rl.search.tree_rollout_groups`, run with the fixture agent) vs
    `group` independent episodes; the same budget of policy turns (group x max_turns)."""
    from signal_helpers import FixtureAgent, calc_env_maker, calc_tasks
    from cwm.rl.search import independent_episodes, tree_search

    group, depth, seeds = 4, 12, range(4)
    budget = group * depth
    with tempfile.TemporaryDirectory() as d:
        repo = Path(d) / "calc"
        tasks = calc_tasks(repo, bugs=2)
        print(f"\nGRPO groups of {group} on the {len(tasks)} two-bug tasks x {len(seeds)} seeds, at most {budget} "
              f"policy turns a group ({machine()})")
        print("arm | groups with signal | episodes passed | episodes | turns | s")
        for arm, run in (("independent", independent_episodes), ("tree", tree_search)):
            signal = passed = episodes = turns = 0
            t0 = time.monotonic()
            for seed in seeds:
                for i, task in enumerate(tasks):
                    r = run(calc_env_maker(task, repo), FixtureAgent(seed * 100 + i), budget=budget, max_depth=depth,
                            episodes=group)
                    signal += len(set(r.outcomes)) == 2
                    passed += sum(r.outcomes)
                    episodes += len(r.outcomes)
                    turns += r.turns_sampled
            n = len(tasks) * len(seeds)
            print(f"{arm} | {signal}/{n} | {passed} | {episodes} | {turns} | {time.monotonic() - t0:.0f}")
