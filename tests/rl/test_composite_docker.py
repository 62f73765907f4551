"""A composite reward on Docker: tests + ruff + mypy (installed at build-image, not at reward time) + a per-turn
cost, with weights and a clamp, every component reported. Three answers that all pass the tests differ by their
lint and their types."""
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
    tag = "cwm-forager-test-checkers:latest"
    info = images.build_image(docker_client, repo, tag, flaky_runs=1, checkers=("ruff", "mypy"))
    assert info.checkers == ["ruff", "mypy"]
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
    spec = RewardSpec.from_dict({"mode": "composite", "checkers": ["ruff", "mypy"],
                                 "weights": {"tests": 0.75, "lint": 0.5, "types": 0.25, "turn_cost": 0.05}})
    env = lambda: EditAnswerEnv(task, spec, docker_grader(spec, timeout_s=120, dc=docker_client), "bugfixer")  # noqa
    clean = env().step(format_edit_blocks({"calc/__init__.py": [("    return a - b", "    return a + b")]}))
    # passes the tests too, but brings an unused import (ruff F401) the code did not have
    unused = ("    return a - b", "    import os\n    return a + b")
    sloppy = env().step(format_edit_blocks({"calc/__init__.py": [unused]}))
    # passes the tests too, but annotates a return type the body contradicts (mypy: incompatible return value)
    typed = ("def add(a, b):\n    return a - b", "def add(a: int, b: int) -> str:\n    return a + b")
    mistyped = env().step(format_edit_blocks({"calc/__init__.py": [typed]}))
    terms = {"tests": 0.75, "lint": 0.5, "types": 0.25, "turn_cost": -0.05}
    assert clean.info["reward_terms"] == pytest.approx(terms)
    assert clean.reward == 1.0                                   # 1.45 clamped to [-1, 1]
    assert sloppy.info["reward_terms"] == pytest.approx({**terms, "lint": -0.5})
    assert sloppy.reward == pytest.approx(0.45)
    assert mistyped.info["reward_terms"]["types"] == -0.25 and mistyped.reward == pytest.approx(0.95)
    assert clean.info["passed"] and sloppy.info["passed"] and mistyped.info["passed"]


def test_unknown_checker_at_build_image_is_one_line(docker_client, tmp_path):
    with pytest.raises(images.ImageError, match="unknown checker 'pylint'") as e:
        images.build_image(docker_client, tmp_path, "x:y", checkers=("pylint",))
    assert "\n" not in str(e.value)
