"""Packing tokenized documents into fixed-length rows for document-causal training (DESIGN §5).

`pack_stream` packs whole documents with best-fit-decreasing over a bounded buffer: a document is cut only
when it is longer than the row (into row-sized pieces, each its own document). Documents are routed to
length buckets (CWM: (0,16k], (16k,64k], (64k,inf)) and a row only holds documents of one bucket.
`chunk_stream` (concatenate-and-chunk) and `method="first_fit"` are the baselines it is measured against
in `benchmarks/test_packing.py`. `make_batch` turns a row into the tensors the trainer and kernels agree on.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100
CWM_BUCKETS = (16_384, 65_536)  # upper bounds: (0,16k], (16k,64k], (64k,inf)


@dataclass
class Document:
    """A tokenized document; loss_mask[i] False means token i is never a training target (e.g. an observation)."""

    input_ids: Sequence[int]
    loss_mask: Sequence[bool] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.input_ids) == 0:
            raise ValueError(f"empty document (source {self.source!r}): drop it before packing")
        if self.loss_mask is not None and len(self.loss_mask) != len(self.input_ids):
            raise ValueError(f"document {self.source!r}: loss_mask has {len(self.loss_mask)} entries for {len(self.input_ids)} tokens")

    def __len__(self) -> int:
        return len(self.input_ids)


def cut_to_rows(doc: Document, row_len: int) -> list[Document]:
    """The document itself if it fits a row, else its consecutive row_len-sized pieces (the last may be shorter)."""
    if len(doc) <= row_len:
        return [doc]
    return [
        Document(doc.input_ids[i : i + row_len], None if doc.loss_mask is None else doc.loss_mask[i : i + row_len], doc.source)
        for i in range(0, len(doc), row_len)
    ]


class _OpenRows:
    """Rows still being filled, for one length bucket. Best fit: the row with the least room that still fits
    (a sorted list of (room, row id), so O(log n) per document); first fit: the oldest row that fits."""

    def __init__(self, row_len: int, method: str) -> None:
        if method not in ("best_fit_decreasing", "first_fit"):
            raise ValueError(f"packing method must be 'best_fit_decreasing' or 'first_fit'; got {method!r}")
        self.row_len, self.method = row_len, method
        self.rows: dict[int, list[Document]] = {}  # row id -> documents; ids grow with creation order
        self.free: list[tuple[int, int]] = []  # (room left, row id), sorted
        self.next_id = 0
        self.docs_held = 0

    def place(self, doc: Document) -> None:
        if self.method == "best_fit_decreasing":
            at = bisect.bisect_left(self.free, (len(doc), -1))
        else:
            fits = [i for i, (room, _) in enumerate(self.free) if room >= len(doc)]
            at = min(fits, key=lambda i: self.free[i][1]) if fits else len(self.free)
        if at == len(self.free):
            room, row = self.row_len, self.next_id
            self.rows[row] = []
            self.next_id += 1
        else:
            room, row = self.free.pop(at)
        self.rows[row].append(doc)
        self.docs_held += 1
        bisect.insort(self.free, (room - len(doc), row))

    def pop_fullest(self) -> list[Document]:
        _, row = self.free.pop(0)
        self.docs_held -= len(self.rows[row])
        return self.rows.pop(row)


def pack_stream(
    docs: Iterable[Document],
    row_len: int,
    *,
    buffer_size: int = 1024,
    seed: int = 0,
    buckets: Sequence[int] | None = None,
    method: str = "best_fit_decreasing",
) -> Iterator[list[Document]]:
    """Yield rows (lists of documents, total length <= row_len) packed from a stream, holding <= buffer_size docs per bucket.

    Incoming documents wait in a pending list (half the buffer). When it is full they are placed, longest first
    (first_fit: in arrival order), into the bucket's open rows; full rows are yielded, and while the open rows hold
    more than half the buffer the fullest one is yielded. Rows yielded together come in an order shuffled by `seed`.
    At the end of the stream every open row is yielded. `buckets` are ascending upper bounds on document length
    (CWM_BUCKETS: (0,16k], (16k,64k], (64k,inf)); a row only holds documents of one bucket.
    Same input, arguments and seed give the same rows.
    """
    if row_len < 1 or buffer_size < 2:
        raise ValueError(f"row_len must be >= 1 and buffer_size >= 2; got {row_len}, {buffer_size}")
    bounds = sorted(buckets or ())
    rng = random.Random(seed)
    pending: list[list[Document]] = [[] for _ in range(len(bounds) + 1)]
    open_rows = [_OpenRows(row_len, method) for _ in range(len(bounds) + 1)]
    pending_limit, held_limit = buffer_size // 2, buffer_size - buffer_size // 2

    def flush(bucket: int, final: bool) -> Iterator[list[Document]]:
        batch, rows = pending[bucket], open_rows[bucket]
        if method == "best_fit_decreasing":
            batch.sort(key=len, reverse=True)  # stable: equal lengths keep arrival order
        for doc in batch:
            rows.place(doc)
        pending[bucket] = []
        done = []
        while rows.free and (final or rows.free[0][0] == 0 or rows.docs_held > held_limit):
            done.append(rows.pop_fullest())
        rng.shuffle(done)
        for row in done:
            rng.shuffle(row)
            yield row

    for doc in docs:
        for piece in cut_to_rows(doc, row_len):
            if len(piece) == row_len:  # a full row already: nothing to pack it with
                yield [piece]
                continue
            bucket = bisect.bisect_left(bounds, len(piece))
            pending[bucket].append(piece)
            if len(pending[bucket]) >= pending_limit:
                yield from flush(bucket, final=False)
    for bucket in range(len(pending)):
        yield from flush(bucket, final=True)


def chunk_stream(docs: Iterable[Document], row_len: int) -> Iterator[list[Document]]:
    """Baseline: concatenate all documents and cut every row_len tokens; documents crossing a row edge are cut there."""
    row: list[Document] = []
    room = row_len
    for doc in docs:
        start = 0
        while start < len(doc):
            take = min(room, len(doc) - start)
            row.append(Document(doc.input_ids[start : start + take],
                                None if doc.loss_mask is None else doc.loss_mask[start : start + take], doc.source))
            start += take
            room -= take
            if room == 0:
                yield row
                row, room = [], row_len
    if row:
        yield row


def make_batch(row: list[Document], row_len: int, pad_id: int) -> dict:
    """DESIGN §5 tensors for one row, padded to row_len by a trailing padding document of its own.

    labels follow the Hugging Face convention (the model shifts them): labels[j] = input_ids[j], except -100 at
    each document's first token (nothing before it in its document predicts it), where loss_mask is False,
    and on padding.
    """
    used = sum(map(len, row))
    if used > row_len:
        raise ValueError(f"row holds {used} tokens, more than row_len={row_len}")
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    bounds = [0]
    for doc in row:
        ids = [int(t) for t in doc.input_ids]
        mask = [True] * len(ids) if doc.loss_mask is None else [bool(m) for m in doc.loss_mask]
        input_ids += ids
        labels += [IGNORE_INDEX] + [t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:])]
        position_ids += range(len(ids))
        bounds.append(bounds[-1] + len(ids))
    if used < row_len:
        pad = row_len - used
        input_ids += [pad_id] * pad
        labels += [IGNORE_INDEX] * pad
        position_ids += range(pad)
        bounds.append(row_len)
    cu_seqlens = torch.tensor(bounds, dtype=torch.int32)
    return {
        "input_ids": torch.tensor([input_ids], dtype=torch.int64),
        "labels": torch.tensor([labels], dtype=torch.int64),
        "position_ids": torch.tensor([position_ids], dtype=torch.int64),
        "cu_seqlens": cu_seqlens,
        "max_seqlen": int((cu_seqlens[1:] - cu_seqlens[:-1]).max()),
    }
