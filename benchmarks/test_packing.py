"""Packing quality on CPU: row utilisation and documents cut, best-fit-decreasing against first-fit and
concatenate-and-chunk, on the same heavy-tailed length stream (benchmarks/conftest.py).

utilisation = real tokens / (rows x row_len). "docs cut" counts documents that land in more than one piece;
BFD and first-fit cut only documents longer than the row, concatenate-and-chunk cuts at every row edge.
Documents are `range` objects, so a 40M-token stream costs no memory.
"""

import time
from collections import Counter

import pytest

from cwm.data.packing import CWM_BUCKETS, Document, chunk_stream, pack_stream

ROW_LENS = (32_768, 131_072)
ROWS_PER_RUN = 1000  # about this many rows' worth of tokens per configuration


def stream(lengths):
    return (Document(range(n), source=str(i)) for i, n in enumerate(lengths))


def measure(rows_iter, row_len, n_docs):
    start = time.perf_counter()
    rows = list(rows_iter)
    seconds = time.perf_counter() - start
    tokens = sum(len(d) for row in rows for d in row)
    pieces = Counter(d.source for row in rows for d in row)
    return {
        "rows": len(rows),
        "utilisation": tokens / (len(rows) * row_len),
        "cut": sum(1 for c in pieces.values() if c > 1),
        "docs_per_s": n_docs / seconds,
    }


@pytest.mark.parametrize("row_len", ROW_LENS)
def test_packing_utilisation_and_cuts(row_len, doc_lengths, show_table):
    probe = doc_lengths(10_000, seed=0)
    n_docs = int(ROWS_PER_RUN * row_len / (sum(probe) / len(probe)))
    lengths = doc_lengths(n_docs, seed=1)
    longer_than_row = sum(n > row_len for n in lengths)
    methods = {
        "best-fit-decreasing, buffer 1024, CWM buckets": lambda: pack_stream(stream(lengths), row_len, buffer_size=1024, buckets=CWM_BUCKETS),
        "best-fit-decreasing, buffer 1024": lambda: pack_stream(stream(lengths), row_len, buffer_size=1024),
        "best-fit-decreasing, buffer 64": lambda: pack_stream(stream(lengths), row_len, buffer_size=64),
        "first-fit, buffer 1024": lambda: pack_stream(stream(lengths), row_len, buffer_size=1024, method="first_fit"),
        "first-fit, buffer 64": lambda: pack_stream(stream(lengths), row_len, buffer_size=64, method="first_fit"),
        "concatenate-and-chunk": lambda: chunk_stream(stream(lengths), row_len),
    }
    results = {name: measure(make(), row_len, n_docs) for name, make in methods.items()}
    show_table(
        f"Packing, row {row_len} tokens, {n_docs} docs ({sum(lengths) / 1e6:.1f}M tokens, {longer_than_row} longer than a row)",
        ["method", "rows", "utilisation", "docs cut", "docs/s"],
        [[name, r["rows"], f"{r['utilisation']:.2%}", r["cut"], f"{r['docs_per_s']:,.0f}"] for name, r in results.items()],
    )
    bfd, ff, chunk = (results[k] for k in ("best-fit-decreasing, buffer 1024", "first-fit, buffer 1024", "concatenate-and-chunk"))
    assert bfd["cut"] == longer_than_row, "best-fit-decreasing cuts only documents longer than the row"
    assert bfd["utilisation"] >= ff["utilisation"]
    assert chunk["cut"] > bfd["cut"]


def test_best_fit_decreasing_speed(benchmark, doc_lengths):
    """Packing throughput (pytest-benchmark): 20k documents into 32k rows with the CWM buckets."""
    lengths = doc_lengths(20_000, seed=2)
    rows = benchmark.pedantic(lambda: list(pack_stream(stream(lengths), 32_768, buffer_size=1024, buckets=CWM_BUCKETS)),
                              rounds=3, iterations=1)
    assert sum(len(d) for row in rows for d in row) == sum(lengths)
