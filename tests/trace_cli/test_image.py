"""`cwm-trace --image`: a repository's tests traced inside a container of its forager image."""
from __future__ import annotations


import pytest
from trace_cli_helpers import cli, shard_samples, unit_statuses

from cwm.forager.sandbox import DockerSandbox

pytestmark = pytest.mark.docker


def untraced_outcomes_in(image: str) -> dict[str, str]:
    """The oracle: the image's recorded test command, untraced, in a forager sandbox of the same image."""
    with DockerSandbox(image) as box:
        return box.run_tests().outcomes


def test_image_run_equals_untraced_run_and_resumes(mixed_image, tmp_path):
    out = tmp_path / "traces"
    first = cli("--image", mixed_image, "-o", out, "--workers", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    statuses = unit_statuses(out)
    oracle = untraced_outcomes_in(mixed_image)
    assert statuses == oracle
    assert statuses["tests/test_mixed.py::test_inside_the_image"] == "passed"   # the image's venv, not ours
    assert statuses["tests/test_mixed.py::test_isolated"] == "passed"           # non-root, no network
    samples = shard_samples(out)
    keys = [k for k, _ in samples]
    assert len(keys) == len(set(keys))
    for key, record in samples:
        assert record["id"] == key and record["schema"] == "cwm.trace/1"
        assert record["origin"]["image"] == mixed_image and record["origin"]["repo"] == "mixed"
        assert record["python"].startswith("3.11")   # the image's interpreter (Debian bookworm's), not this one
    total = [r for _, r in samples if r["origin"].get("qualname") == "test_total"][0]
    assert any(f["path"] == "mixed/__init__.py" and "s += x" in f["source"] for f in total["frames"])
    manifest = (out / "manifest.json").read_text()

    second = cli("--image", mixed_image, "-o", out, "--workers", "2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "0 run, 6 already done" in second.stdout
    assert (out / "manifest.json").read_text() == manifest
    assert sorted(k for k, _ in shard_samples(out)) == sorted(keys)


def test_missing_image_is_one_line(tmp_path, capsys, docker_client):
    from cwm.trace_cli import main

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("earlier work")
    code = main(["--image", "cwm-no-such-image:1", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("cwm-trace: error:")]
    assert code == 2 and len(lines) == 1 and "cwm-no-such-image:1" in lines[0] and "build-image" in lines[0], err
    assert "Traceback" not in err
    assert (tmp_path / "out" / "keep.txt").read_text() == "earlier work"
