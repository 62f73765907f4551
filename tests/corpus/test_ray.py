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
    tasks = generate_mutate_fix(image, info.repo, info.commit, info.passing, 2, seed=0,
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


def test_tasks_on_ray_are_the_local_tasks(ray_cluster, docker_client, tmp_path):
    """`cwm-forager tasks --ray`: candidates validated in sandboxes on the worker nodes, same seeded tasks."""
    from cwm.forager.cli import main
    from cwm.forager.demo import ensure_demo_image
    from cwm.forager.tasks import load_tasks

    cluster, _ = ray_cluster
    image = ensure_demo_image(docker_client, tmp_path / "calc")
    common = ["tasks", image, "--kind", "mutate-fix", "-n", "2", "--seed", "0", "--workers", "2"]
    assert main(common + ["-o", str(tmp_path / "local.jsonl")]) == 0
    assert main(common + ["-o", str(tmp_path / "ray.jsonl"), "--ray", cluster.address]) == 0
    local, on_ray = load_tasks(tmp_path / "local.jsonl"), load_tasks(tmp_path / "ray.jsonl")
    assert [t.id for t in on_ray] == [t.id for t in local] and len(local) == 2
    assert [t.fail_to_pass for t in on_ray] == [t.fail_to_pass for t in local]
    assert main(common + ["-o", str(tmp_path / "x.jsonl"), "--ray", cluster.address, "--workers", "5"]) == 2


def test_a_worker_node_without_docker_stops_the_run_at_start(tiny_list, tmp_path):
    """Docker-based units need an engine on every worker node: checked before any unit starts, one line."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, env_vars={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
        cluster.wait_for_nodes()
        out = tmp_path / "out"
        proc = cli("corpus", tiny_list, "-o", out, "--ray", cluster.address)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("cwm-trace: error:")]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert "no Docker engine on Ray node" in lines[0] and "every worker node" in lines[0]
        assert rows(out) == {} and not (out / "items").exists()    # no unit ran
    finally:
        cluster.shutdown()
