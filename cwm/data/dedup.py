"""Near-duplicate removal over shards: MinHash LSH (datasketch), as CWM did for its trajectories (Jaccard 0.5).

    python -m cwm.data.dedup SRC -o OUT [--threshold 0.5] [--num-perm 128] [--ngram 5]

A streaming step: records are read one at a time from SRC's shards (trace records, `cwm.trace/1`, or trajectories,
`cwm.trajectory/1`), and each is kept unless a record kept before it is a near-duplicate: its estimated Jaccard
similarity of word n-gram sets is at least the threshold. Memory holds the LSH index (num_perm hash values a kept
record), never the records. Kept records go to OUT's shards in SRC's order with their keys; `OUT/dedup.jsonl`
names every removed record, the kept one it duplicates and the estimated similarity.

What a record's text is: a trace's context and, frame by frame, its source, locals and value, with memory addresses
taken out (they differ from run to run, not from program to program); a trajectory's task statement, its messages
and its patch. The first record of a near-duplicate cluster is the one kept.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from datasketch import MinHash, MinHashLSH

_TOKEN = re.compile(r"\w+|[^\w\s]")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


def record_text(record: dict) -> str:
    """The text near-duplicates are judged on (see the module docstring)."""
    if "frames" in record:
        parts = [record.get("context") or ""]
        for f in record.get("frames") or ():
            parts += [f.get("source") or "", json.dumps(f.get("locals"), sort_keys=True), f.get("value") or ""]
        return _ADDRESS.sub("0x", "\n".join(parts))
    if "messages" in record:
        task = record.get("task") or {}
        parts = [task.get("statement") or ""] + [m.get("content") or "" for m in record["messages"]]
        return "\n".join(parts + [record.get("patch") or ""])
    return json.dumps(record, sort_keys=True)


def shingles(text: str, n: int = 5) -> set[str]:
    """Word n-grams of the text (one gram of all its tokens when it is shorter than n)."""
    tokens = _TOKEN.findall(text)
    if len(tokens) <= n:
        return {" ".join(tokens)}
    return {" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def minhash(grams: Iterable[str], num_perm: int = 128) -> MinHash:
    m = MinHash(num_perm=num_perm)
    m.update_batch([g.encode("utf-8", "surrogatepass") for g in grams])
    return m


@dataclass
class DedupStats:
    seen: int = 0
    kept: int = 0
    removed: list[dict] = field(default_factory=list)    # {"key", "duplicate_of", "jaccard"}
    wall_s: float = 0.0


class NearDuplicateFilter:
    """Streaming filter: `check(key, record)` returns None for a record to keep (and indexes it), else the key of
    the kept record it nearly duplicates and their estimated Jaccard similarity."""

    def __init__(self, threshold: float = 0.5, num_perm: int = 128, ngram: int = 5):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold {threshold}: must be in (0, 1]")
        self.threshold, self.num_perm, self.ngram = threshold, num_perm, ngram
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.sketches: dict[str, MinHash] = {}

    def check(self, key: str, record: dict) -> tuple[str, float] | None:
        m = minhash(shingles(record_text(record), self.ngram), self.num_perm)
        best = None
        for other in self.lsh.query(m):    # LSH candidates; the estimate decides (fewer false positives)
            j = m.jaccard(self.sketches[other])
            if j >= self.threshold and (best is None or j > best[1]):
                best = (other, j)
        if best is None and key not in self.sketches:
            self.lsh.insert(key, m)
            self.sketches[key] = m
        return best


def dedup_records(records: Iterable[tuple[str, dict]], *, threshold: float = 0.5, num_perm: int = 128,
                  ngram: int = 5, stats: DedupStats | None = None) -> Iterator[tuple[str, dict]]:
    """The kept (key, record) pairs, in order; `stats` gets what was removed."""
    stats = stats if stats is not None else DedupStats()
    filt = NearDuplicateFilter(threshold, num_perm, ngram)
    start = time.monotonic()
    for key, record in records:
        stats.seen += 1
        hit = filt.check(key, record)
        if hit is None:
            stats.kept += 1
            yield key, record
        else:
            stats.removed.append({"key": key, "duplicate_of": hit[0], "jaccard": round(hit[1], 3)})
    stats.wall_s = time.monotonic() - start


def dedup_shards(src, out: Path, *, threshold: float = 0.5, num_perm: int = 128, ngram: int = 5,
                 prefix: str = "dedup", shard_samples: int = 1000) -> DedupStats:
    """Read SRC's shards in order, write the kept records to OUT's shards and the removed ones to OUT/dedup.jsonl.
    OUT must not hold an earlier dedup output (a rerun starts from SRC again, into a fresh OUT)."""
    from cwm.data.shards import MANIFEST, ShardWriter, iter_records
    out = Path(out)
    if (out / MANIFEST).exists() or (out / "dedup.jsonl").exists():
        raise FileExistsError(f"{out}: holds a dedup output already; give a new directory")
    stats = DedupStats()
    records = ((r.get("id") or f"r{i}", r) for i, r in enumerate(iter_records(src)))
    with ShardWriter(out, prefix, max_samples=shard_samples) as writer:
        for key, record in dedup_records(records, threshold=threshold, num_perm=num_perm, ngram=ngram, stats=stats):
            writer.add([(key, record)])
    with open(out / "dedup.jsonl", "w", encoding="utf-8") as f:
        for row in stats.removed:
            f.write(json.dumps(row) + "\n")
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cwm.data.dedup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="a shard directory, a .tar shard or a glob")
    p.add_argument("-o", "--out", required=True, type=Path, help="a new directory for the kept records")
    p.add_argument("--threshold", type=float, default=0.5, help="Jaccard similarity that makes a duplicate (0.5)")
    p.add_argument("--num-perm", type=int, default=128, help="MinHash permutations (128)")
    p.add_argument("--ngram", type=int, default=5, help="words per shingle (5)")
    args = p.parse_args(argv)
    try:
        stats = dedup_shards(args.src, args.out, threshold=args.threshold, num_perm=args.num_perm, ngram=args.ngram)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"cwm.data.dedup: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"seen": stats.seen, "kept": stats.kept, "removed": len(stats.removed),
                      "seconds": round(stats.wall_s, 2), "report": str(args.out / "dedup.jsonl")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
