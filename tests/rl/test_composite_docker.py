"""A composite reward on Docker: tests + ruff (installed at build-image, not at reward time) + a per-turn cost, with
weights and a clamp, every component reported. Two answers that both pass the tests differ by their lint."""
import textwrap

import pytest

from cwm.data.edits import format_edit_blocks
from cwm.forager import images
from cwm.forager.demo import DEMO_FILES, write_demo_repo
from cwm.forager.grading import docker_grader
from cwm.forager.tasks import Task
from cwm.rl.envs.swe_rl import EditAnswerEnv
from cwm.rl.rewards import RewardSpec

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def ruff_image(docker_client, tmp_path_factory):
    repo = write_demo_repo(tmp_path_factory.mktemp("lint") / "calc")
    tag = "cwm-forager-test-ruff:latest"
    info = images.build_image(docker_client, repo, tag, flaky_runs=1, checkers=("ruff",))
    assert info.checkers == ["ruff"]
    yield tag
    docker_client.images.remove(tag, force=True)


def test_composite_reward_reads_tests_and_lint(ruff_image, docker_client):
    fixed = textwrap.dedent(DEMO_FILES["calc/__init__.py"])
    passing = images.image_info(docker_client, ruff_image).passing
    task = Task(id="calc-add", kind="mutate-fix", repo="calc", commit=None, image=ruff_image,
                statement="add subtracts", fail_to_pass=["tests/test_calc.py::test_add"],
                pass_to_pass=[t for t in passing if not t.endswith("test_add")], mutation=None,
                start_files={"calc/__init__.py": fixed.replace("return a + b", "return a - b")},
                fix_files={"calc/__init__.py": fixed})
    spec = RewardSpec.from_dict({"mode": "composite", "checkers": ["ruff"],
                                 "weights": {"tests": 0.75, "lint": 0.5, "turn_cost": 0.05}})
    env = lambda: EditAnswerEnv(task, spec, docker_grader(spec, timeout_s=120, dc=docker_client), "bugfixer")  # noqa
    clean = env().step(format_edit_blocks({"calc/__init__.py": [("    return a - b", "    return a + b")]}))
    # passes the tests too, but brings an unused import (ruff F401) the code did not have
    sloppy = env().step(format_edit_blocks({"calc/__init__.py": [("    return a - b", "    import os\n    return a + b")]}))
    assert clean.info["reward_terms"] == pytest.approx({"tests": 0.75, "lint": 0.5, "turn_cost": -0.05})
    assert clean.reward == 1.0                                   # 1.2 clamped to [-1, 1]
    assert sloppy.info["reward_terms"] == pytest.approx({"tests": 0.75, "lint": -0.5, "turn_cost": -0.05})
    assert sloppy.reward == pytest.approx(0.2) and clean.info["passed"] and sloppy.info["passed"]


def test_unknown_checker_at_build_image_is_one_line(docker_client, tmp_path):
    with pytest.raises(images.ImageError, match="unknown checker 'pylint'") as e:
        images.build_image(docker_client, tmp_path, "x:y", checkers=("pylint",))
    assert "\n" not in str(e.value)
