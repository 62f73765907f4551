"""MinHash LSH near-duplicate removal over shards, checked against planted near-duplicates (edited copies)."""
from __future__ import annotations

import json
import random

import pytest

from cwm.data.dedup import dedup_shards, main, record_text, shingles
from cwm.data.shards import ShardWriter, iter_records

WORDS = [f"w{i}" for i in range(5000)]


def trace_record(rng: random.Random, key: str, n_frames: int = 12) -> dict:
    """A trace-shaped record of random names and values (distinct records share almost no 5-grams)."""
    frames = [{"kind": "line", "depth": 0, "path": "m.py", "line": i + 1,
               "source": " ".join(rng.choice(WORDS) for _ in range(6)) + "\n",
               "locals": {rng.choice(WORDS): repr(rng.randrange(10**6)) for _ in range(3)}, "value": None}
              for i in range(n_frames)]
    return {"id": key, "schema": "cwm.trace/1", "context": f"def {rng.choice(WORDS)}(x):  # << START_OF_TRACE\n",
            "frames": frames, "outcome": "returned"}


def edited(rng: random.Random, record: dict, key: str, fraction: float) -> dict:
    """A copy with `fraction` of its frames (chosen at random) rewritten: source line and locals."""
    copy = json.loads(json.dumps(record))
    copy["id"] = key
    frames = copy["frames"]
    for frame in rng.sample(frames, max(1, round(fraction * len(frames)))):
        frame["source"] = " ".join(rng.choice(WORDS) for _ in range(6)) + "\n"
        frame["locals"] = {rng.choice(WORDS): repr(rng.randrange(10**6)) for _ in range(3)}
    return copy


def exact_jaccard(a: dict, b: dict) -> float:
    sa, sb = shingles(record_text(a)), shingles(record_text(b))
    return len(sa & sb) / len(sa | sb)


def test_planted_near_duplicates_are_found_at_the_threshold(tmp_path):
    rng = random.Random(0)
    originals = [trace_record(rng, f"orig{i:04d}") for i in range(300)]
    near = {f"near{i:04d}": edited(rng, originals[i * 7], f"near{i:04d}", 0.15) for i in range(25)}
    far = {f"far{i:04d}": edited(rng, originals[i * 11], f"far{i:04d}", 0.5) for i in range(10)}
    stream = originals + list(near.values()) + list(far.values())
    stream[300:] = rng.sample(stream[300:], len(stream) - 300)  # planted copies interleaved, not in blocks
    src = tmp_path / "src"
    with ShardWriter(src, "traces", max_samples=100) as w:
        for r in stream:
            w.add([(r["id"], r)])
    # the oracle: exact Jaccard of the planted pairs straddles the threshold as intended
    assert all(0.6 <= exact_jaccard(r, originals[int(k[4:]) * 7]) < 1 for k, r in near.items())
    assert all(0.25 <= exact_jaccard(r, originals[int(k[3:]) * 11]) <= 0.4 for k, r in far.items())   # kept

    stats = dedup_shards(src, tmp_path / "out", threshold=0.5)
    removed = {row["key"]: row for row in stats.removed}
    assert set(removed) == set(near)                      # every planted near-duplicate, nothing else
    for key, row in removed.items():
        assert row["duplicate_of"] == f"orig{int(key[4:]) * 7:04d}"
        assert abs(row["jaccard"] - exact_jaccard(near[key], originals[int(key[4:]) * 7])) < 0.15
    kept = [r["id"] for r in iter_records(tmp_path / "out")]
    assert kept == [r["id"] for r in stream if r["id"] not in near]    # streaming: order kept
    report = [json.loads(line) for line in (tmp_path / "out" / "dedup.jsonl").read_text().splitlines()]
    assert {r["key"] for r in report} == set(near)


def test_trajectories_and_cli(tmp_path, capsys):
    rng = random.Random(1)
    base = [{"id": f"t{i}", "schema": "cwm.trajectory/1", "task": {"statement": "fix " + " ".join(rng.sample(WORDS, 30))},
             "messages": [{"role": "assistant", "content": " ".join(rng.sample(WORDS, 80))}], "patch": ""}
            for i in range(20)]
    dup = json.loads(json.dumps(base[3]))
    dup["id"] = "t3copy"
    src = tmp_path / "src"
    with ShardWriter(src, "traj") as w:
        for r in base + [dup]:
            w.add([(r["id"], r)])
    assert main([str(src), "-o", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["removed"] == 1 and summary["kept"] == 20
    assert main([str(src), "-o", str(tmp_path / "out")]) == 2       # an existing output is not overwritten
    assert "holds a dedup output already" in capsys.readouterr().err
    with pytest.raises(ValueError):
        dedup_shards(src, tmp_path / "other", threshold=1.5)
