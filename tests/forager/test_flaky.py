"""Flaky-aware credit on Docker: a fixture repository with one test that fails at random, seeded per run (its
seed is the run's number, kept in /tmp of the container: random.Random(n).random() >= 0.5 fails, so runs 0 and 2
fail, run 1 passes — ~50%, and reproducible). build-image records it as flaky; the oracle's reward is not -1
because of it (the grader re-runs it, or gives the reduced credit); a mutation whose only failure is that test
(its oracle does not pass deterministically) is quarantined, not made a task."""
from __future__ import annotations

import json
import textwrap

import pytest

from cwm.forager.agent import run_episode
from cwm.forager.demo import ensure_repo_image
from cwm.forager.episode import EpisodeConfig
from cwm.forager.images import image_info
from cwm.forager.mutate import Mutation
from cwm.forager.policies import OraclePolicy
from cwm.forager.sandbox import DockerSandbox
from cwm.forager.tasks import Task, validate_mutation

pytestmark = pytest.mark.docker

CODE = "def add(a, b):\n    return a + b\n"
TESTS = textwrap.dedent('''\
    import os
    import random

    from coin import add


    def test_add():
        assert add(2, 3) == 5


    def test_flaky():
        path = "/tmp/cwm-flaky-run"
        n = int(open(path).read()) if os.path.exists(path) else 0
        with open(path, "w") as f:
            f.write(str(n + 1))
        assert random.Random(n).random() < 0.5
    ''')
FLAKY = "tests/test_coin.py::test_flaky"
ADD = "tests/test_coin.py::test_add"


@pytest.fixture(scope="module")
def coin_image(docker_client, base_image, tmp_path_factory) -> str:
    repo = tmp_path_factory.mktemp("coin") / "coin"
    (repo / "coin").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "coin" / "__init__.py").write_text(CODE)
    (repo / "tests" / "test_coin.py").write_text(TESTS)
    (repo / "pyproject.toml").write_text('[project]\nname = "coin"\nversion = "0"\n[tool.setuptools]\npackages = ["coin"]\n')
    return ensure_repo_image(docker_client, repo, "cwm-forager-test-coin", base_image)[0]


def test_build_image_records_the_flaky_test(docker_client, coin_image):
    info = image_info(docker_client, coin_image)
    assert info.flaky == [FLAKY] and info.flaky_runs == 3
    assert set(info.passing) == {ADD, FLAKY} and not info.failing
    assert json.loads(docker_client.images.get(coin_image).labels["cwm-forager.image"])["flaky"] == [FLAKY]


def _task(image) -> Task:
    return Task(id="coin-add", kind="mutate-fix", repo="coin", commit=None, image=image,
                statement="test_add fails.", fail_to_pass=[ADD], pass_to_pass=[FLAKY], mutation=None,
                start_files={"coin/__init__.py": CODE.replace("a + b", "a - b")},
                fix_files={"coin/__init__.py": CODE}, flaky=[FLAKY])


def test_the_oracle_is_not_minus_one_because_of_the_flaky_test(docker_client, coin_image):
    task = _task(coin_image)
    box = lambda t: DockerSandbox(t.image, dc=docker_client, run_id="flaky")  # noqa: E731
    # the first grading run is the container's run 0: the flaky test fails; a re-run (run 1) passes it
    record = run_episode(task, OraclePolicy(), box, EpisodeConfig(test_timeout_s=120))
    assert (record["outcome"], record["reward"]) == ("submitted", 1), record["stats"]
    assert record["stats"]["flaky_rerun"] and record["stats"]["flaky_still_failing"] == 0
    # no re-runs allowed: the failing flaky test earns the reduced credit instead of -1
    record = run_episode(task, OraclePolicy(), box, EpisodeConfig(test_timeout_s=120, flaky_reruns=0,
                                                                   flaky_credit=0.5))
    assert record["reward"] == 0.5 and record["stats"]["flaky_still_failing"] == 1
    # without the flaky record the same oracle would have been -1
    record = run_episode(Task(**{**task.__dict__, "flaky": []}), OraclePolicy(), box, EpisodeConfig(test_timeout_s=120))
    assert record["reward"] == -1


def test_a_task_whose_oracle_is_flaky_is_quarantined(docker_client, coin_image):
    info = image_info(docker_client, coin_image)
    touched = Mutation("noop", "coin/__init__.py", 1, "add", CODE + "# touched\n")
    with DockerSandbox(coin_image, dc=docker_client, run_id="flaky") as sb:  # run 0: the flaky test fails
        sb.begin()
        naive = validate_mutation(sb, touched, CODE, set(info.passing), 120)
    assert naive is not None and naive[1] == [FLAKY]     # without the flaky record: a task decided by chance
    with DockerSandbox(coin_image, dc=docker_client, run_id="flaky") as sb:
        sb.begin()
        assert validate_mutation(sb, touched, CODE, set(info.passing), 120, frozenset(info.flaky)) is None


def test_issue_fix_task_whose_fix_passes_only_by_chance_is_quarantined(docker_client, coin_image, tmp_path):
    """A commit that fixes add and adds test_add, beside the flaky test: in one sandbox the flaky test fails on
    the parent (run 0), passes with the fix (run 1) — so it looks fail-to-pass — and fails again on the re-run
    (run 2). With re-runs the commit is quarantined; with one run it would have been a task decided by chance."""
    import subprocess

    from cwm.forager.tasks import generate_issue_fix

    repo = tmp_path / "coin"
    (repo / "coin").mkdir(parents=True)
    (repo / "tests").mkdir()
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (repo / "coin" / "__init__.py").write_text(CODE.replace("a + b", "a - b"))
    (repo / "tests" / "test_coin.py").write_text(TESTS.split("def test_add")[0].replace("from coin import add\n", ""))
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "flaky test only")
    (repo / "coin" / "__init__.py").write_text(CODE)
    (repo / "tests" / "test_coin.py").write_text(TESTS)
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "fix add")
    box = lambda: DockerSandbox(coin_image, dc=docker_client, run_id="flaky")  # noqa: E731
    naive = generate_issue_fix(repo, coin_image, open_sandbox=box, flaky_runs=1)
    assert len(naive) == 1 and FLAKY in naive[0].fail_to_pass
    quarantined: list = []
    assert generate_issue_fix(repo, coin_image, open_sandbox=box, quarantined=quarantined) == []
    assert len(quarantined) == 1
