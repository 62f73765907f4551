"""The offline `swe_rl` environment on tasks mined from a real git history (this project's own), through the CLI:
the oracle's edit blocks score 1.0 on every task, an empty patch the empty-patch value, a reply with no edit
block -1. No Docker, nothing executed."""
import subprocess
from pathlib import Path

import pytest

from cwm.data.edits import oracle_answer
from cwm.forager.cli import main
from cwm.forager.tasks import TaskError, generate_pr_history, load_tasks
from cwm.rl.envs.swe_rl import EditAnswerEnv, EditAnswerTasks
from cwm.rl.recipe import EnvSpec, RecipeError
from cwm.rl.rewards import RewardSpec, patch_similarity

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def history_tasks(tmp_path_factory):
    if subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD~30"], capture_output=True).returncode != 0:
        pytest.skip(f"{REPO} has no git history of 30+ commits (an export without .git): cannot mine pr-history")
    out = tmp_path_factory.mktemp("pr") / "tasks.jsonl"
    assert main(["tasks", "--kind", "pr-history", "--repo", str(REPO), "-n", "25", "-o", str(out)]) == 0
    return out


def test_oracle_scores_one_and_noop_the_empty_patch_value(history_tasks):
    tasks = load_tasks(history_tasks)
    assert len(tasks) == 25 and all(t.kind == "pr-history" and not t.image for t in tasks)
    assert len({t.id for t in tasks}) == 25
    spec = RewardSpec(mode="similarity")
    kinds = set()
    for task in tasks:
        # the commit is real: the oracle is git's own content of the touched files at the commit
        commit = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%H", f"{task.commit}..HEAD",
                                 "--", *task.fix_files], capture_output=True, text=True).stdout
        assert commit, task.id
        env = EditAnswerEnv(task, spec)
        prompt = env.reset()[1]["content"]
        assert task.statement.strip().splitlines()[0] in prompt
        result = env.step("I read the history.\n" + oracle_answer(task.start_files, task.fix_files))
        assert (result.reward, result.done, result.info["passed"]) == (1.0, True, True), task.id
        # the no-op answer: an empty patch, worth what an empty prediction is worth against this oracle
        empty_value = patch_similarity(task.start_files, task.fix_files, {})[0]
        assert empty_value == 0.0
        assert env.step("Nothing to change.\n<solution>\n</solution>").reward == -1.0  # no edit block: malformed
        kinds |= {"new" if v is None else "deleted" if task.fix_files[p] is None else "changed"
                  for p, v in task.start_files.items()}
    assert "changed" in kinds
    # a localisation turn has more to choose from than the touched files
    assert all(set(t.start_files) <= set(t.candidates) for t in tasks)
    assert any(set(t.candidates) - set(t.start_files) for t in tasks)


def test_factory_from_recipe_and_its_errors(history_tasks):
    factory = EditAnswerTasks.from_spec(EnvSpec(kind="swe_rl", tasks=str(history_tasks), limit=3))
    assert len(factory) == 3 and factory.spec.mode == "similarity"
    with pytest.raises(RecipeError, match="unknown checker 'pylint'"):
        EditAnswerTasks.from_spec(EnvSpec(kind="swe_rl", tasks=str(history_tasks),
                                          reward={"mode": "composite", "checkers": ["pylint"]}))
    with pytest.raises(RecipeError, match="pr-history tasks have none"):
        EditAnswerTasks.from_spec(EnvSpec(kind="swe_rl", tasks=str(history_tasks), reward={"mode": "tests"}))


def test_repo_without_history_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    assert main(["tasks", "--kind", "pr-history", "--repo", str(tmp_path / "plain"), "-o", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a git repository" in err and "--repo" in err
    subprocess.run(["git", "init", "-q", str(tmp_path / "fresh")], check=True)
    with pytest.raises(TaskError, match="without commits"):
        generate_pr_history(tmp_path / "fresh")


def test_localize_turn_rewards_overlap_with_the_oracles_files():
    from cwm.forager.tasks import Task

    task = Task(id="t", kind="pr-history", repo="r", commit=None, image="", statement="Set b to 2.",
                fail_to_pass=[], pass_to_pass=[], mutation=None, start_files={"a.py": "a = 0\n", "b.py": "b = 0\n"},
                fix_files={"b.py": "b = 2\n"}, candidates=["a.py", "b.py", "c.py"])
    spec = RewardSpec(mode="similarity", localize=0.25)
    answer = oracle_answer(task.start_files, task.fix_files)

    def episode(files_reply):
        env = EditAnswerEnv(task, spec)
        assert "c.py" in env.reset()[1]["content"]
        first = env.step(files_reply)
        if first.done:
            return first, None
        return env.step(answer), first.observation[0]["content"]

    right, shown = episode("<files>\nb.py\n</files>")
    assert right.reward == 1.0 and "b = 0" in shown and "a = 0" not in shown
    wrong, _ = episode("<files>\na.py\n</files>")
    assert wrong.reward == pytest.approx(0.75 * 1.0 + 0.25 * -1) and wrong.info["localized"] == 0.0
    both, _ = episode("<files>\na.py\nb.py\n</files>")                      # F1 = 2/3
    assert both.reward == pytest.approx(0.75 + 0.25 * (2 * 2 / 3 - 1))
    assert episode("a.py, b.py")[0].reward == -1.0                          # no <files> section: malformed
    # pr-history tasks carry candidates beyond the touched files
    assert RewardSpec.from_dict({"mode": "similarity", "localize": 0.25}).localize == 0.25
