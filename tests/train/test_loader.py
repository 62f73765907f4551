"""The streaming loader: deterministic, exactly resumable, split across ranks/workers without loss, mixed by weight."""
from __future__ import annotations

import itertools
import json
from collections import Counter

import torch

from cwm.data.loader import PackedLoader, SlotStream
from cwm.data.recipe import load_recipe
from cwm.data.tokenizer import load_tokenizer


def _take(loader, n):
    return [b for b in itertools.islice(iter(loader), n)]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])
                                    for x, y in zip(a, b))


def test_two_loaders_give_the_same_rows(corpus, jsonl_recipe):
    recipe = load_recipe(jsonl_recipe())
    a = _take(PackedLoader(recipe, recipe.tokenizer), 25)
    b = _take(PackedLoader(recipe, recipe.tokenizer), 25)
    assert _same(a, b)
    assert len({tuple(x["input_ids"][0].tolist()) for x in a}) > 20  # not one row repeated


def test_resume_mid_window_continues_exactly(corpus, jsonl_recipe):
    """Stop after 13 rows (inside a 4-row window, during beta's second epoch boundary region), resume, compare."""
    recipe = load_recipe(jsonl_recipe(beta_epochs=2))
    for workers in (0, 2):
        straight = _take(PackedLoader(recipe, recipe.tokenizer, num_workers=workers), 40)
        first = PackedLoader(recipe, recipe.tokenizer, num_workers=workers)
        head = _take(first, 13)
        state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint stores it
        second = PackedLoader(recipe, recipe.tokenizer, num_workers=workers)
        second.load_state_dict(state)
        tail = _take(second, 27)
        assert _same(straight, head + tail), f"resume with {workers} workers diverged"


def test_ranks_and_workers_split_an_epoch_without_repeats_or_gaps(corpus, jsonl_recipe):
    """Four slots (2 ranks x 2 workers) read one epoch of both sources: every non-held-out document exactly once."""
    recipe = load_recipe(jsonl_recipe(holdout=0.2, seq_len=256))  # no document is cut
    for s in recipe.sources:
        s.epochs = 1
    tok = load_tokenizer(recipe.tokenizer)
    seen = Counter()
    for slot in range(4):
        stream = SlotStream(recipe, tok, slot=slot, n_slots=4)
        while (row := stream.next_row()) is not None:
            for doc in row:
                seen[tok.decode(doc.input_ids[1:-1])] += 1
    from cwm.data.documents import is_heldout

    expected = Counter()
    for name in ("alpha", "beta"):
        source = recipe.source(name)
        from cwm.data.documents import iter_file_records

        for path in source.files:
            for key, record in iter_file_records(source, path):
                if not is_heldout(key, source.holdout):
                    expected[record["text"]] += 1
    held_out = len(corpus["alpha"]) + len(corpus["beta"]) - sum(expected.values())
    assert held_out > 5  # the holdout really removed alpha documents
    assert seen == expected


def test_mixing_follows_the_weights_in_tokens(corpus, jsonl_recipe):
    """Over many rows the token share of each source is its weight (within 2 points)."""
    for alpha_weight in (0.7, 0.25):
        recipe = load_recipe(jsonl_recipe(alpha_weight=alpha_weight, name=f"r{alpha_weight}.yaml"))
        counts = Counter()
        for batch in _take(PackedLoader(recipe, recipe.tokenizer), 300):
            ids = batch["source_ids"][0]
            counts.update(ids[ids >= 0].tolist())
        share = counts[0] / (counts[0] + counts[1])
        print(f"alpha weight {alpha_weight}: token share {share:.3f} over {sum(counts.values())} tokens")
        assert abs(share - alpha_weight) < 0.02


def test_rows_are_packed_documents_with_masks(corpus, jsonl_recipe):
    recipe = load_recipe(jsonl_recipe())
    batch = _take(PackedLoader(recipe, recipe.tokenizer), 1)[0]
    cu = batch["cu_seqlens"].tolist()
    assert cu[0] == 0 and cu[-1] == recipe.seq_len
    pos = batch["position_ids"][0].tolist()
    assert all(pos[s] == 0 for s in cu[:-1])
    assert all(batch["labels"][0, s] == -100 for s in cu[:-1])


def test_text_and_parquet_sources_become_documents(corpus, tmp_path):
    """Plain code files are one document each; parquet rows give their `text_key` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "a.py").write_text("def f(x):\n    return x + 1\n")
    (tmp_path / "code" / "b.py").write_text("def g(y):\n    return y * 2\n")
    pq.write_table(pa.table({"content": ["total = 0", "for x in range(3):"], "lang": ["py", "py"]}),
                   tmp_path / "rows.parquet")
    recipe_path = tmp_path / "mixed.yaml"
    recipe_path.write_text(f"""
seq_len: 256
tokenizer: {corpus['tokenizer']}
sources:
  code: {{kind: text, paths: ["{tmp_path}/code/**/*.py"], weight: 0.5, epochs: 1}}
  table: {{kind: parquet, paths: ["{tmp_path}/rows.parquet"], text_key: content, weight: 0.5, epochs: 1}}
""")
    recipe = load_recipe(recipe_path)
    tok = load_tokenizer(recipe.tokenizer)
    stream = SlotStream(recipe, tok, slot=0, n_slots=1)
    texts = set()
    while (row := stream.next_row()) is not None:
        texts.update(tok.decode(doc.input_ids[1:-1]) for doc in row)
    assert texts == {"def f(x):\n    return x + 1\n", "def g(y):\n    return y * 2\n", "total = 0", "for x in range(3):"}


def test_a_document_longer_than_the_packing_window_is_cut_into_rows(corpus, tmp_path):
    """One record of more than pack_window_rows × seq_len tokens, alone in its window: the loader hands it out
    as row-sized pieces, every token once and in order (it used to ask the packer for a buffer of one)."""
    from cwm.data.documents import tokenize_pieces

    long_text = "alpha 0: " + " ".join(["total = x + y"] * 400)
    (tmp_path / "long").mkdir()
    (tmp_path / "long" / "one.jsonl").write_text(json.dumps({"text": long_text}) + "\n")
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(f"""
seq_len: 64
tokenizer: {corpus['tokenizer']}
pack_window_rows: 2
sources:
  long: {{kind: jsonl, paths: ["{tmp_path}/long/*.jsonl"], weight: 1.0, epochs: 1}}
""")
    recipe = load_recipe(recipe_path)
    tokenizer = load_tokenizer(recipe.tokenizer)
    rows = list(PackedLoader(recipe, recipe.tokenizer))
    want, _ = tokenize_pieces(tokenizer, [(long_text, True)])
    assert len(want) > 2 * 64
    got = [int(t) for b in rows for t, s in zip(b["input_ids"][0], b["source_ids"][0]) if s >= 0]
    assert got == list(want)
    assert len(rows) == -(-len(want) // 64)
