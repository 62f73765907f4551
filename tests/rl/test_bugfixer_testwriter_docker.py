"""Kimi-Dev's BugFixer and TestWriter environments on Docker, on the demo task (`add` subtracts): the oracle +1,
a no-op -1, and for TestWriter a test that passes on both versions -1 and one that fails on both -1."""
import pytest

from cwm.data.edits import format_edit_blocks, oracle_answer
from cwm.forager.sandbox import LABEL, DockerSandbox
from cwm.rl.envs.swe_rl import EditAnswerEnv
from cwm.rl.envs.testwriter import TestWriterEnv
from cwm.rl.rewards import RewardSpec
from cwm.forager.grading import docker_grader
from rl_helpers import demo_swe_task

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def task(docker_client):
    return demo_swe_task(docker_client)


def new_test(body: str) -> str:
    return format_edit_blocks({"tests/test_issue.py": [("", f"from calc import add\n\n\ndef test_issue():\n    {body}\n")]})


def test_bugfixer_oracle_plus_one_noop_minus_one(task, docker_client):
    grader = docker_grader(RewardSpec(mode="tests"), timeout_s=120, dc=docker_client)
    env = lambda: EditAnswerEnv(task, RewardSpec(mode="tests"), grader, name="bugfixer")  # noqa: E731
    oracle = env().step(oracle_answer(task.start_files, task.fix_files))
    assert (oracle.reward, oracle.info["passed"], oracle.info["tests_failed"]) == (1.0, True, 0), oracle.info
    # a well-formed answer that changes nothing that matters, and an answer with no edit at all
    comment = format_edit_blocks({"calc/__init__.py": [("def add(a, b):", "def add(a, b):  # adds")]})
    assert env().step(comment).reward == -1.0
    assert env().step("<solution>\n</solution>").reward == -1.0
    # CWM's mixed reward on the same grader: the near miss keeps partial credit, the right fix +1
    mixed = EditAnswerEnv(task, RewardSpec(mode="tests_then_similarity", tau=0.3), grader, name="bugfixer")
    near = format_edit_blocks({"calc/__init__.py": [("    return a - b", "    return b - a")]})
    result = mixed.step(near)
    assert -1.0 < result.reward < 0.0 and not result.info["passed"], result.info
    assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL}.run=grade"})


@pytest.mark.parametrize("answer, reward, verdict", [
    (new_test("assert add(2, 3) == 5"), 1.0, "reproduces"),            # fails on a - b, passes on a + b
    (new_test("assert add(0, 0) == 0"), -1.0, "passes_on_buggy"),      # passes on both
    (new_test("assert add(2, 3) == 6"), -1.0, "fails_with_fix"),       # fails on both
    (new_test("assert add(2, 3) ==="), -1.0, "collection_error"),      # does not even collect
    ("<solution>\n</solution>", -1.0, None),                           # no-op: no test written
])
def test_testwriter_checks_both_sides(task, docker_client, answer, reward, verdict):
    env = TestWriterEnv(task, lambda t: DockerSandbox(t.image, dc=docker_client, run_id="testwriter"), 120)
    assert "Write a pytest test" in env.reset()[1]["content"]
    result = env.step(answer)
    assert result.reward == reward and result.done, result.info
    assert result.info.get("verdict") == verdict


def test_testwriter_rejects_a_conftest(task, docker_client):
    env = TestWriterEnv(task, lambda t: DockerSandbox(t.image, dc=docker_client, run_id="testwriter"), 120)
    result = env.step(format_edit_blocks({"tests/conftest.py": [("", "x = 1\n")]}))
    assert result.reward == -1.0 and "not a test module" in result.info["rejected"]
