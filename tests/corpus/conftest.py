"""Fixtures for corpus runs: small folder repositories (built into images on first use), a local Ray cluster."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus_helpers import cli, tiny_repo  # noqa: E402


@pytest.fixture(scope="session")
def tiny_list(tmp_path_factory) -> Path:
    """A list of four folder repositories (their images are found again by content hash in later sessions)."""
    base = tmp_path_factory.mktemp("corpus-src")
    # fixed paths would make the slugs (and so the keys) stable across sessions; within one, tmp paths do
    lines = [str(tiny_repo(base / f"repo{i}", i).relative_to(base)) for i in range(4)]
    listing = base / "list.txt"
    listing.write_text("# four tiny repositories\n" + "\n".join(lines) + "\n")
    return listing


@pytest.fixture(scope="session")
def local_corpus(docker_client, tiny_list, tmp_path_factory) -> Path:
    """The tiny list run locally (two items at once): the reference for the Ray runs."""
    out = tmp_path_factory.mktemp("local") / "corpus"
    proc = cli("corpus", tiny_list, "-o", out, "--jobs", "2", "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster started by the test: a head with no CPUs (it schedules nothing) and two worker nodes of
    one CPU each; every process is a child of this one and ends with `shutdown`."""
    import os
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, nodes
    cluster.shutdown()
