"""`cwm-trace corpus --ray ADDRESS` on a local Ray cluster started by the test (a head and two worker nodes)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from corpus_helpers import all_keys, cli, rows

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_ray_run_gives_the_local_run_keys(ray_cluster, local_corpus, tiny_list, tmp_path):
    cluster, _ = ray_cluster
    out = tmp_path / "ray"
    proc = cli("corpus", tiny_list, "-o", out, "--ray", cluster.address, "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = rows(out)
    assert all(r["status"] == "traced" for r in done.values()) and len(done) == 4, done
    keys = all_keys(out)
    assert len(keys) == len(set(keys))
    assert set(keys) == set(all_keys(local_corpus))
    assert len({r["worker"] for r in done.values()}) >= 2     # the units ran on more than one worker process


def test_sigkilled_worker_units_are_retried_without_duplicates(ray_cluster, local_corpus, tiny_list, tmp_path):
    cluster, _ = ray_cluster
    out = tmp_path / "ray-kill"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    driver = subprocess.Popen([sys.executable, "-m", "cwm.trace_cli", "corpus", str(tiny_list), "-o", str(out),
                               "--ray", cluster.address, "--workers", "1"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 240
    try:
        while killed is None and time.monotonic() < deadline and driver.poll() is None:
            for marker in sorted((out / "running").glob("*.json")) if (out / "running").exists() else []:
                try:
                    running = json.loads(marker.read_text())
                except (OSError, ValueError):
                    continue
                # a unit in the middle of its tracing: some of its tests done, not all
                log = out / "items" / marker.stem / "units.jsonl"
                if log.exists() and log.read_text().count("\n") >= 1 and marker.stem not in rows(out):
                    os.kill(running["pid"], signal.SIGKILL)
                    killed = (marker.stem, running["pid"])
                    break
            time.sleep(0.05)
        stdout, stderr = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert killed, "no unit was caught running"
    assert driver.returncode == 0, stderr[-3000:]
    done = rows(out)
    assert len(done) == 4 and all(r["status"] == "traced" for r in done.values()), done
    assert done[killed[0]]["worker"].split(":")[1] != str(killed[1])   # the killed unit ran again elsewhere
    keys = all_keys(out)
    assert len(keys) == len(set(keys)), "a retried unit wrote a sample twice"
    assert set(keys) == set(all_keys(local_corpus)), "a retried unit lost or added samples"


def test_collect_on_ray_gives_the_local_episodes(ray_cluster, docker_client, tmp_path):
    """`cwm-forager collect --ray`: chunks of tasks as Ray tasks; the same episodes (groups) as a local collect."""
    from cwm.data.shards import iter_records
    from cwm.forager.cli import main
    from cwm.forager.demo import ensure_demo_image
    from cwm.forager.images import image_info
    from cwm.forager.sandbox import DockerSandbox
    from cwm.forager.tasks import generate_mutate_fix, write_tasks

    cluster, _ = ray_cluster
    image = ensure_demo_image(docker_client, tmp_path / "calc")
    info = image_info(docker_client, image)
    tasks = generate_mutate_fix(image, info.repo, info.commit, info.passing, 3, seed=0,
                                open_sandbox=lambda: DockerSandbox(image, dc=docker_client))
    write_tasks(tasks, tmp_path / "tasks.jsonl")
    assert main(["collect", str(tmp_path / "tasks.jsonl"), "--policy", "oracle", "-o", str(tmp_path / "local"),
                 "--quiet"]) == 0
    assert main(["collect", str(tmp_path / "tasks.jsonl"), "--policy", "oracle", "-o", str(tmp_path / "ray"),
                 "--ray", cluster.address, "--chunk", "2"]) == 0
    local = {r["task"]["id"]: r["reward"] for r in iter_records(tmp_path / "local")}
    ray_side = [(r["task"]["id"], r["reward"]) for r in iter_records(tmp_path / "ray")]
    assert len(ray_side) == len(dict(ray_side)) == len(tasks)
    assert dict(ray_side) == local == {t.id: 1 for t in tasks}
    # the merged manifest lets a later run (with or without --ray) resume: nothing left to do
    assert main(["collect", str(tmp_path / "tasks.jsonl"), "--policy", "oracle", "-o", str(tmp_path / "ray"),
                 "--quiet"]) == 0
    assert len(list(iter_records(tmp_path / "ray"))) == len(tasks)
