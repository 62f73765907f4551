"""From a source's files to training documents: read records, keep held-out ones apart, render, tokenize.

Every choice made while rendering (how deep a trace steps in, whether a trajectory's observations are masked)
is drawn from a `random.Random` seeded by the recipe seed, the source, the record key and the epoch, so a
document is the same whichever rank, worker or resumed run renders it.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Iterator

from cwm.data.recipe import Source


def iter_file_records(source: Source, path: str) -> Iterator[tuple[str, object]]:
    """(key, record) for each record of one file of `source`, in file order."""
    if source.kind in ("trace", "trajectory"):
        from cwm.data.shards import iter_records, record_key

        for record in iter_records(path):
            yield str(record.get("id") or record_key(record)), record
    elif source.kind == "text":
        yield path, Path(path).read_text(errors="replace")
    elif source.kind == "jsonl":
        with open(path) as f:
            for lineno, line in enumerate(f):
                if line.strip():
                    yield f"{path}:{lineno}", json.loads(line)
    elif source.kind == "parquet":
        import pyarrow.parquet as pq

        index = 0
        for batch in pq.ParquetFile(path).iter_batches(columns=[source.text_key]):
            for row in batch.to_pylist():
                yield f"{path}:{index}", row
                index += 1
    else:
        raise ValueError(f"source {source.name}: unknown kind {source.kind}")


def is_heldout(key: str, fraction: float) -> bool:
    """A stable split by key: the same records are held out in every run, rank and epoch."""
    if fraction <= 0.0:
        return False
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32 < fraction


def document_rng(seed: int, source: Source, key: str, epoch: int) -> random.Random:
    return random.Random(f"{seed}/{source.name}/{key}/{epoch}")


def render_pieces(source: Source, record, rng: random.Random) -> list[tuple[str, bool]]:
    """A record as (text, in_loss) pieces, in order; concatenated they are the document's text."""
    if source.kind == "trace":
        from tracer.format import render_trace

        return [(render_trace(step_in(record, source.trace.depth, source.trace.step_in_prob, rng)), True)]
    if source.kind == "trajectory":
        from cwm.forager.render import trajectory_segments

        mask_observations = rng.random() < source.observation_mask_prob
        return [(text, not (is_observation and mask_observations))
                for text, is_observation in trajectory_segments(record)]
    if source.kind == "text":
        return [(record, True)]
    value = record.get(source.text_key) if isinstance(record, dict) else None
    if not isinstance(value, str):
        raise ValueError(f"source {source.name}: record has no string field '{source.text_key}'")
    return [(value, True)]


def step_in(record: dict, depth: int, prob: float, rng: random.Random) -> dict:
    """The record with the frames of some nested calls left out, as CWM renders traces: a call `k` levels
    below the entry is stepped into when k <= depth and a draw falls under `prob`; otherwise its whole
    subtree (call ... return, or up to where its exception leaves) is dropped and the caller's next line
    follows directly. The tracer records the full tree (up to its own depth); this picks a view of it.
    """
    frames = record.get("frames") or []
    if not frames:
        return record
    entry = frames[0]["depth"]
    kept, skip, skip_ended = [], None, False
    for frame in frames:
        level = frame["depth"] - entry
        if skip is not None:
            inside = level > skip or (level == skip and not skip_ended)
            if inside:
                skip_ended = skip_ended or (level == skip and frame["kind"] == "return")
                continue
            skip = None
        if frame["kind"] == "call" and level > 0 and not (level <= depth and rng.random() < prob):
            skip, skip_ended = level, False
            continue
        kept.append(frame)
    return {**record, "frames": kept} if len(kept) != len(frames) else record


def tokenize_pieces(tokenizer, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[bool]]:
    """Token ids and loss mask of a document: BOS, the pieces, EOS (the end of a trace or file is predicted)."""
    ids = [tokenizer.bos_token_id]
    mask = [False]
    for text, in_loss in pieces:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        mask.extend([in_loss] * len(piece))
    ids.append(tokenizer.eos_token_id)
    mask.append(True)
    return ids, mask


def iter_heldout(source: Source) -> Iterator[tuple[str, object]]:
    """(key, record) of every record the training loader leaves out of `source` (its `holdout` fraction)."""
    for path in source.files:
        for key, record in iter_file_records(source, path):
            if is_heldout(key, source.holdout):
                yield key, record
