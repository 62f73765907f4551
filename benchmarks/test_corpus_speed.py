"""Corpus-scale figures, each against a baseline measured in the same run:

- dedup: MinHash LSH (cwm/data/dedup.py, Jaccard 0.5) against exact all-pairs Jaccard of the same shingle sets,
  seconds per 1k trace-shaped records (and LSH alone on 5k: how it scales);
- Ray: `cwm-trace corpus --ray` items per minute with 1 worker node against 2 (a local cluster started here:
  a head with no CPUs and one-CPU worker nodes), on the same images, each run into a fresh directory.
"""
from __future__ import annotations

import contextlib
import io
import json
import random
import sys
import time
from pathlib import Path

import pytest

from cwm.data.dedup import dedup_records, record_text, shingles

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "corpus"))
from corpus_helpers import tiny_repo  # noqa: E402

WORDS = [f"w{i}" for i in range(5000)]


def trace_records(n: int, seed: int = 0, dup_every: int = 10) -> list[tuple[str, dict]]:
    """Trace-shaped records of 20 frames, every `dup_every`-th an edited copy of an earlier one."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i and i % dup_every == 0:
            rec = json.loads(json.dumps(out[rng.randrange(len(out))][1]))
            for f in rng.sample(rec["frames"], 3):
                f["source"] = " ".join(rng.choice(WORDS) for _ in range(6))
        else:
            rec = {"context": "def f(x):\n", "frames": [
                {"source": " ".join(rng.choice(WORDS) for _ in range(6)),
                 "locals": {rng.choice(WORDS): repr(rng.randrange(10**6)) for _ in range(3)}, "value": None}
                for _ in range(20)]}
        out.append((f"r{i}", rec))
    return out


def exact_all_pairs(records, threshold: float = 0.5) -> set[str]:
    """The baseline: each record against every kept one, exact Jaccard of the shingle sets."""
    kept, removed = [], set()
    for key, rec in records:
        s = shingles(record_text(rec))
        if any(len(s & k) / len(s | k) >= threshold for k in kept):
            removed.add(key)
        else:
            kept.append(s)
    return removed


@pytest.mark.slow
def test_dedup_seconds_per_1k_records():
    records = trace_records(1000)
    t0 = time.perf_counter()
    from cwm.data.dedup import DedupStats
    stats = DedupStats()
    list(dedup_records(records, stats=stats))
    lsh_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    exact = exact_all_pairs(records)
    exact_s = time.perf_counter() - t0
    found = {r["key"] for r in stats.removed}
    big = trace_records(5000, seed=1)
    t0 = time.perf_counter()
    list(dedup_records(big))
    lsh5k_s = time.perf_counter() - t0
    print(f"\ndedup, 1k trace-shaped records (20 frames, 10% edited copies): MinHash LSH {lsh_s:.2f} s, "
          f"exact all-pairs {exact_s:.2f} s ({exact_s / lsh_s:.1f}x); LSH found {len(found)}, exact {len(exact)}, "
          f"agreeing on {len(found & exact)}; LSH on 5k: {lsh5k_s:.2f} s = {lsh5k_s / 5:.2f} s per 1k")
    assert len(found & exact) >= 0.95 * len(exact) and len(found - exact) <= 0.05 * len(exact)


def _cli(*args) -> tuple[int, str]:
    from cwm.trace_cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue() + err.getvalue()[-2000:]


@pytest.mark.docker
@pytest.mark.slow
def test_ray_one_vs_two_workers(tmp_path):
    import os

    from cwm.forager import images
    try:
        images.client()
    except images.ImageError as exc:
        pytest.skip(f"no Docker engine: {exc}")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    src = tmp_path / "src"
    lines = [str(tiny_repo(src / f"repo{i}", i, sleep_s=2.0).relative_to(src)) for i in range(6)]
    (src / "list.txt").write_text("\n".join(lines) + "\n")
    code, said = _cli("corpus", src / "list.txt", "-o", tmp_path / "warm", "--jobs", "2", "--workers", "1")
    assert code == 0, said     # builds the images; the timed runs find them
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        rates = {}
        for n in (1, 2):
            while len([x for x in cluster.list_all_nodes() if not x.head]) < n:
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            t0 = time.perf_counter()
            code, said = _cli("corpus", src / "list.txt", "-o", tmp_path / f"ray{n}", "--ray", cluster.address,
                              "--workers", "1")
            wall = time.perf_counter() - t0
            assert code == 0, said
            rates[n] = len(lines) / wall * 60
        print(f"\ncwm-trace corpus --ray, {len(lines)} items of 4 tests (one sleeps 2 s), images built: "
              f"1 worker node {rates[1]:.1f} items/min, 2 worker nodes {rates[2]:.1f} items/min "
              f"({rates[2] / rates[1]:.2f}x) on this 2-core machine")
    finally:
        cluster.shutdown()
