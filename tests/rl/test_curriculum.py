"""Curriculum by pass rate (cwm/rl/curriculum.py): draws follow P(signal), state survives a checkpoint, and on a
family mixing always-solved, never-solved and learnable tasks it beats the shuffled cycle (the proof of issue 22)."""
import json
from collections import Counter

import pytest
import yaml

from cwm.rl.curriculum import CurriculumConfig, CurriculumSampler, signal_probability
from cwm.rl.rollout import TaskSampler


class _Family:
    def __init__(self, name, n):
        self.name, self.n = name, n

    def __len__(self):
        return self.n

    def make(self, index):
        raise AssertionError("not used")


def test_signal_probability_matches_enumeration():
    from itertools import product

    for p in (0.0, 0.1, 0.5, 0.93, 1.0):
        mixed = sum(p ** sum(o) * (1 - p) ** (4 - sum(o)) for o in product((0, 1), repeat=4) if 0 < sum(o) < 4)
        assert signal_probability(p, 4) == pytest.approx(mixed)


def _report(sampler, name, task, passes, n=8):
    sampler.update([(name, task, i < passes) for i in range(n)])


def test_draws_follow_signal_and_retest_the_stalest():
    fam = _Family("codegen", 4)
    s = CurriculumSampler([fam], seed=0, cfg=CurriculumConfig(enabled=True, retest_prob=0.0), group_size=8)
    first = [s.draw()[1] for _ in range(4)]  # unknown tasks first, none twice while pending
    assert sorted(first) == [0, 1, 2, 3]
    for task, passes in [(0, 8), (1, 0), (2, 4), (3, 1)]:  # solved, unsolved, p=.5, p=.125
        _report(s, "codegen", task, passes)
    counts = Counter()
    for _ in range(2000):
        _, task = s.draw()
        counts[task] += 1
        s.update([("codegen", task, None)])  # frees the task without changing its rate
    assert counts[0] == counts[1] == 0
    ratio = counts[3] / counts[2]
    assert ratio == pytest.approx(signal_probability(1 / 8, 8) / signal_probability(0.5, 8), rel=0.15)
    assert s.step_metrics()["curriculum/in_band"] == 2.0

    # nothing informative left: re-test the task tested least recently, solved or not, in a cycle
    s = CurriculumSampler([fam], seed=1, cfg=CurriculumConfig(enabled=True, retest_prob=0.0), group_size=8)
    first = [s.draw()[1] for _ in range(4)]
    s.step_metrics()
    for task in range(4):
        _report(s, "codegen", task, 8 if task % 2 else 0)
    again = []
    for _ in range(8):
        _, task = s.draw()
        again.append(task)
        s.update([("codegen", task, None)])
    assert again == first + first
    m = s.step_metrics()
    assert m["curriculum/retests"] == 8 and m["curriculum/band_occupancy"] == 0.0
    assert (m["curriculum/solved"], m["curriculum/unsolved"], m["curriculum/in_band"]) == (2, 2, 0)


def test_decay_lets_a_learned_task_come_back():
    fam = _Family("codegen", 1)
    s = CurriculumSampler([fam], seed=0, cfg=CurriculumConfig(enabled=True, decay=0.5), group_size=8)
    _report(s, "codegen", 0, 0)
    assert s.pass_rate(0, 0) == 0.0 and not s.informative(0.0)
    _report(s, "codegen", 0, 8)
    assert s.pass_rate(0, 0) == pytest.approx(8 / 12)  # the old group weighs half


def test_state_survives_json_and_continues_identically():
    fams = [_Family("codegen", 6), _Family("output_prediction", 5)]
    cfg = CurriculumConfig(enabled=True, retest_prob=0.3)
    a = CurriculumSampler(fams, [1.0, 2.0], seed=3, cfg=cfg, group_size=4)
    for i in range(30):
        fam, task = a.draw()
        a.update([(fam.name, task, (task + i) % 3 == 0) for _ in range(4)])
    state = json.loads(json.dumps(a.state_dict()))
    b = CurriculumSampler(fams, [1.0, 2.0], seed=99, cfg=cfg, group_size=4)
    b.load_state_dict(state)
    assert [b.pass_rate(k, i) for k in range(2) for i in range(len(fams[k]))] == \
        [a.pass_rate(k, i) for k in range(2) for i in range(len(fams[k]))]
    da = [(f.name, t) for f, t in (a.draw() for _ in range(20))]
    db = [(f.name, t) for f, t in (b.draw() for _ in range(20))]
    assert da == db
    # a checkpoint of a plain sampler resumes with fresh statistics; one of other envs is refused with a reason
    plain = TaskSampler(fams, [1.0, 2.0], seed=3).state_dict()
    b.load_state_dict(plain)
    with pytest.raises(ValueError, match="resume with the same envs"):
        CurriculumSampler(fams[:1], seed=0, cfg=cfg).load_state_dict(state)


def test_bad_config_and_shared_names_are_refused():
    with pytest.raises(ValueError, match="band_low"):
        CurriculumSampler([_Family("a", 2)], cfg=CurriculumConfig(enabled=True, band_low=0.6, band_high=0.4))
    with pytest.raises(ValueError, match="share a name"):
        CurriculumSampler([_Family("a", 2), _Family("a", 3)])
    s = CurriculumSampler([_Family("a", 2)])
    with pytest.raises(ValueError, match="not one of the sampler's families"):
        s.update([("b", 0, True)])


SEEDS = (0, 1, 2)
STEPS = 30
TARGET = 0.0  # expected reward on the learnable tasks (pass rate 50%); the untrained policy is at about -0.96


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_curriculum_beats_uniform_on_mixed_family():
    """Same tiny model, tasks and seeds; the only difference is the sampler."""
    from signal_helpers import run_curriculum

    uniform = [run_curriculum(False, seed=s, steps=STEPS) for s in SEEDS]
    curriculum = [run_curriculum(True, seed=s, steps=STEPS) for s in SEEDS]

    def signal(runs):
        return sum(sum(r.signal_fracs) for r in runs) / sum(len(r.signal_fracs) for r in runs)

    def steps_to(runs):  # not reached within STEPS counts as STEPS + 1
        return [r.steps_to(TARGET) or STEPS + 1 for r in runs]

    print(f"non-zero-advantage groups: uniform {signal(uniform):.3f}, curriculum {signal(curriculum):.3f}; "
          f"steps to expected reward {TARGET:+.1f} on the learnable tasks: uniform {steps_to(uniform)}, "
          f"curriculum {steps_to(curriculum)}; learnable groups drawn: uniform "
          f"{[r.learnable_groups for r in uniform]}, curriculum {[r.learnable_groups for r in curriculum]}")
    assert signal(curriculum) >= 1.3 * signal(uniform)
    assert sum(steps_to(curriculum)) <= 0.85 * sum(steps_to(uniform))


@pytest.mark.timeout(300)
def test_trainer_logs_curriculum_and_resume_keeps_it(tmp_path):
    from rl_helpers import output_prediction_recipe
    from cwm.rl.recipe import load_recipe
    from cwm.rl.train import train

    recipe = output_prediction_recipe(tmp_path, 12, groups_per_step=3, group_size=2,
                                      curriculum={"enabled": True, "retest_prob": 0.0})
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    train(load_recipe(str(tmp_path / "recipe.yaml")), progress=False)
    train(load_recipe(str(tmp_path / "recipe.yaml"), ["steps=3"]), progress=False)  # resumes at step 2
    steps = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps] == [1, 2, 3]
    unseen = [m["curriculum/unseen"] for m in steps]
    # 12 tasks, 3 drawn a step, unknown ones first: a resumed run that had lost its statistics would be at
    # 12 - 3 = 9 or more after step 3
    assert unseen[0] == 9.0 and unseen[2] <= unseen[1] < 9.0, unseen
    assert all(m["curriculum/band_occupancy"] == 1.0 for m in steps)  # retest_prob 0: every draw informative
