"""End to end on a real package from PyPI, through the CLI: build its image, make mutate-fix tasks, collect with
the oracle (every task +1) and with noop (every task -1), in Docker."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cwm.forager import images
from cwm.forager.cli import main
from cwm.forager.sandbox import LABEL
from cwm.forager.tasks import Task, load_tasks, write_tasks
from cwm.pypi import RegistryUnreachable, fetch_sdist

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]

# inflection: pure Python, no dependencies, 455 plain-pytest tests in about a second.
PACKAGE = ("inflection", "0.5.1", "1a29730d366e996aaacffb2f1f1cb9593dc38e2ddd30c91250c6dde09ea9b417")


@pytest.fixture(scope="module")
def package_image(docker_client, base_image) -> str:
    try:
        src = fetch_sdist(*PACKAGE)
    except RegistryUnreachable as exc:
        pytest.skip(f"package registry unreachable: {exc}")
    h = hashlib.sha256(f"{PACKAGE}{base_image}".encode())
    for module in ("images.py", "cwm_pytest_report.py"):
        h.update((Path(images.__file__).parent / module).read_bytes())
    tag = f"cwm-forager-test-{PACKAGE[0]}:{h.hexdigest()[:12]}"
    try:
        docker_client.images.get(tag)
    except Exception:  # noqa: BLE001 - not built yet: through the CLI, as a user would
        assert main(["build-image", str(src), "--tag", tag, "--base", base_image]) == 0
    info = images.image_info(docker_client, tag)
    assert len(info.passing) > 400 and not info.failing
    return tag


def test_real_package_oracle_wins_noop_loses(package_image, docker_client, tmp_path, capsys):
    tasks_file = tmp_path / "tasks.jsonl"
    assert main(["tasks", package_image, "--kind", "mutate-fix", "-n", "2", "-o", str(tasks_file),
                 "--seed", "0", "--workers", "2"]) == 0
    tasks = load_tasks(tasks_file)
    assert len(tasks) == 2 and all(t.fail_to_pass and t.pass_to_pass for t in tasks)
    out = tmp_path / "traj"
    capsys.readouterr()
    assert main(["collect", str(tasks_file), "--policy", "oracle", "--workers", "2", "-o", str(out), "--quiet"]) == 0
    oracle = json.loads(capsys.readouterr().out)
    assert oracle["rewards"] == {"1": 2} and oracle["outcomes"] == {"submitted": 2}
    assert main(["collect", str(tasks_file), "--policy", "noop", "--workers", "2", "-o", str(out), "--quiet"]) == 0
    noop = json.loads(capsys.readouterr().out)
    assert noop["rewards"] == {"-1": 2}
    assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL}=1"})


def test_build_image_rejects_a_repo_whose_tests_do_not_run(docker_client, base_image, tmp_path, capsys):
    repo = tmp_path / "broken"
    (repo / "tests").mkdir(parents=True)
    (repo / "tests" / "test_x.py").write_text("import does_not_exist\n\ndef test_x():\n    pass\n")
    assert main(["build-image", str(repo), "--tag", "cwm-forager-test-broken:1", "--base", base_image]) == 2
    err = capsys.readouterr().err
    assert "its tests do not run" in err and "does_not_exist" in err


def test_cli_reports_bad_inputs(tmp_path, capsys):
    bad = tmp_path / "tasks.jsonl"
    bad.write_text("not json\n")
    assert main(["collect", str(bad), "--policy", "noop", "-o", str(tmp_path / "o")]) == 2
    assert f"{bad}:1: not a task record" in capsys.readouterr().err
    good = tmp_path / "good.jsonl"
    write_tasks([Task(id="t", kind="mutate-fix", repo="r", commit=None, image="i", statement="s",
                      fail_to_pass=["a"], pass_to_pass=[], mutation=None)], good)
    assert main(["collect", str(good), "--policy", "openai", "--sandbox", "local", "--repo", str(tmp_path),
                 "-o", str(tmp_path / "o")]) == 2
    assert "--policy openai needs --base-url" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
