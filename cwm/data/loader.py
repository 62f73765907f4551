"""The streaming, deterministic, resumable loader: recipe sources -> mixed documents -> packed rows -> batches.

Who reads what. Ranks × dataloader workers form `n_slots` slots; slot `rank * workers + worker` reads its own
part of every source: whole files (shards) when a source has at least `n_slots` of them, else every
`n_slots`-th record of each file. Files are reshuffled each epoch by the recipe seed, the same on every slot.

Mixing. Each slot picks the next document's source by token deficit: the active source whose tokens so far,
divided by its weight, are fewest. This holds the token shares to the weights without any random state.

Packing and resume. Documents are packed a *window* at a time (`pack_window_rows` rows' worth of tokens) with
`cwm.data.packing.pack_stream`, seeded per window. A slot's state is therefore small and exact: the source
cursors and token counts at the start of the current window, the window index, and how many of its rows were
handed out. Restoring re-reads that one window, re-packs it identically and skips the rows already used, so
a resumed run sees exactly the rows an uninterrupted one would have: nothing repeated, nothing skipped.

With dataloader workers every row carries its worker's state; the loader keeps the state of the last row it
handed out per worker (prefetched rows do not count) and, on resume, rotates worker ids so that the worker
whose turn was next comes first, keeping the round-robin order of the uninterrupted run.
"""
from __future__ import annotations

import copy
import random
from typing import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cwm.data.documents import (document_rng, is_heldout, iter_file_records, render_pieces, split_key,
                                tokenize_pieces)
from cwm.data.recipe import Recipe, RecipeError, Source


class SourceCursor:
    """One source's records for one slot, epoch after epoch, at a position that can be saved and restored."""

    def __init__(self, source: Source, seed: int, slot: int, n_slots: int, state: dict | None = None):
        self.source, self.seed, self.slot, self.n_slots = source, seed, slot, n_slots
        state = state or {"epoch": 0, "file": 0, "offset": 0, "yielded": 0}
        self.epoch, self.file, self.offset, self.yielded = state["epoch"], state["file"], state["offset"], state["yielded"]
        self._records = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "file": self.file, "offset": self.offset, "yielded": self.yielded}

    @property
    def exhausted(self) -> bool:
        return self.source.epochs is not None and self.epoch >= self.source.epochs

    def _epoch_files(self) -> tuple[list[str], bool]:
        files = list(self.source.files)
        random.Random(f"{self.seed}/{self.source.name}/files/{self.epoch}").shuffle(files)
        if len(files) >= self.n_slots:
            return files[self.slot::self.n_slots], False
        return files, True

    def next(self) -> tuple[str, object, int] | None:
        """(key, record, epoch) of the next training record of this slot, or None once the source is exhausted."""
        while not self.exhausted:
            files, split_records = self._epoch_files()
            if self.file >= len(files):
                if self.yielded == 0:
                    raise RecipeError(f"source {self.source.name}: slot {self.slot} of {self.n_slots} got no records "
                                     f"in epoch {self.epoch}; too few records for this many ranks × workers")
                self.epoch, self.file, self.offset, self.yielded = self.epoch + 1, 0, 0, 0
                continue
            if self._records is None:
                self._records = iter_file_records(self.source, files[self.file])
                for _ in range(self.offset):
                    next(self._records, None)
            item = next(self._records, None)
            if item is None:
                self.file, self.offset, self._records = self.file + 1, 0, None
                continue
            position, self.offset = self.offset, self.offset + 1
            key, record = item
            if split_records and position % self.n_slots != self.slot:
                continue
            if is_heldout(split_key(key, record), self.source.holdout):
                continue
            self.yielded += 1
            return key, record, self.epoch
        return None


class SlotStream:
    """The packed rows of one slot (see the module docstring), with `state_dict()` valid after every row."""

    def __init__(self, recipe: Recipe, tokenizer, slot: int, n_slots: int, state: dict | None = None):
        self.recipe, self.tokenizer, self.slot, self.n_slots = recipe, tokenizer, slot, n_slots
        self.window, self.rows_done, self._rows = 0, 0, None
        self._start = {"cursors": {}, "tokens": {s.name: 0 for s in recipe.sources}}
        self._set_start(self._start)
        if state is not None:
            self.window = state["window"]
            self._set_start(state["start"])
            self._fill_window()
            self.rows_done = state["rows_done"]

    def _set_start(self, start: dict) -> None:
        self.cursors = {s.name: SourceCursor(s, self.recipe.seed, self.slot, self.n_slots, start["cursors"].get(s.name))
                        for s in self.recipe.sources}
        self.tokens = dict(start["tokens"])

    def state_dict(self) -> dict:
        return {"window": self.window, "rows_done": self.rows_done, "start": self._start}

    def _next_document(self):
        from cwm.data.packing import Document

        while True:
            active = [s for s in self.recipe.sources if not self.cursors[s.name].exhausted]
            if not active:
                return None
            source = min(active, key=lambda s: self.tokens[s.name] / s.weight)
            item = self.cursors[source.name].next()
            if item is None:
                continue
            key, record, epoch = item
            pieces = render_pieces(source, record, document_rng(self.recipe.seed, source, key, epoch))
            ids, mask = tokenize_pieces(self.tokenizer, pieces)
            self.tokens[source.name] += len(ids)
            return Document(input_ids=ids, loss_mask=mask, source=source.name)

    def _fill_window(self) -> None:
        from cwm.data.packing import pack_stream

        self._start = {"cursors": {n: c.state_dict() for n, c in self.cursors.items()}, "tokens": dict(self.tokens)}
        budget = self.recipe.pack_window_rows * self.recipe.seq_len
        docs, size = [], 0
        while size < budget and (doc := self._next_document()) is not None:
            docs.append(doc)
            size += len(doc.input_ids)
        seed = self.recipe.seed * 1_000_003 + self.slot * 7919 + self.window
        # buffer_size >= 2 as the packer requires, also for a window holding one document longer than the window.
        self._rows = list(pack_stream(docs, self.recipe.seq_len, buffer_size=max(2, len(docs)), seed=seed,
                                      buckets=self.recipe.buckets)) if docs else []
        self.rows_done = 0

    def next_row(self):
        """The next packed row (a list of Documents), or None when every source is exhausted."""
        if self._rows is None:
            self._fill_window()
        elif self.rows_done >= len(self._rows):
            self.window += 1
            self._fill_window()
        if self.rows_done >= len(self._rows):
            return None
        row = self._rows[self.rows_done]
        self.rows_done += 1
        return row


def row_batch(row, seq_len: int, pad_id: int, source_names: list[str]) -> dict:
    """`make_batch` tensors (DESIGN.md §5) plus `source_ids` [1, T]: the recipe index of each token's source
    (-1 on padding), for per-source losses and mixing statistics."""
    from cwm.data.packing import make_batch

    batch = make_batch(row, seq_len, pad_id)
    source_ids = torch.full((1, batch["input_ids"].shape[1]), -1, dtype=torch.long)
    start = 0
    for doc in row:
        n = len(doc.input_ids)
        source_ids[0, start:start + n] = source_names.index(doc.source)
        start += n
    batch["source_ids"] = source_ids
    return batch


class PackedDataset(IterableDataset):
    """The rows of one rank; each dataloader worker serves one slot. Yields batches carrying `_worker`/`_state`."""

    def __init__(self, recipe: Recipe, tokenizer_dir: str, rank: int, world: int, workers: int,
                 states: dict[int, dict], rotation: int):
        self.recipe, self.tokenizer_dir = recipe, tokenizer_dir
        self.rank, self.world, self.workers, self.states, self.rotation = rank, world, workers, states, rotation

    def __iter__(self) -> Iterator[dict]:
        from cwm.data.tokenizer import load_tokenizer

        info = get_worker_info()
        logical = ((info.id if info else 0) + self.rotation) % self.workers
        tokenizer = load_tokenizer(self.tokenizer_dir)
        stream = SlotStream(self.recipe, tokenizer, slot=self.rank * self.workers + logical,
                            n_slots=self.world * self.workers, state=self.states.get(logical))
        names = [s.name for s in self.recipe.sources]
        while (row := stream.next_row()) is not None:
            batch = row_batch(row, self.recipe.seq_len, tokenizer.pad_token_id, names)
            batch["_worker"] = logical
            batch["_state"] = copy.deepcopy(stream.state_dict())
            yield batch


class PackedLoader:
    """Iterates one rank's batches; `state_dict()`/`load_state_dict()` checkpoint the position exactly."""

    def __init__(self, recipe: Recipe, tokenizer_dir: str, *, rank: int = 0, world: int = 1, num_workers: int = 0):
        self.recipe, self.tokenizer_dir = recipe, str(tokenizer_dir)
        self.rank, self.world, self.num_workers = rank, world, num_workers
        self.workers = max(1, num_workers)
        self.consumed = 0
        self.states: dict[int, dict] = {}

    def __iter__(self) -> Iterator[dict]:
        """Batches from the current position on (a fresh iterator after `load_state_dict` continues from there)."""
        dataset = PackedDataset(self.recipe, self.tokenizer_dir, self.rank, self.world, self.workers,
                                dict(self.states), rotation=self.consumed % self.workers)
        batches = DataLoader(dataset, batch_size=None, num_workers=self.num_workers,
                             persistent_workers=False) if self.num_workers else dataset
        for batch in batches:
            self.states[int(batch.pop("_worker"))] = batch.pop("_state")
            self.consumed += 1
            yield batch

    def state_dict(self) -> dict:
        return {"world": self.world, "workers": self.workers, "consumed": self.consumed,
                "states": copy.deepcopy(self.states)}

    def load_state_dict(self, state: dict) -> None:
        if (state["world"], state["workers"]) != (self.world, self.workers):
            raise ValueError(f"loader state was saved with {state['world']} ranks × {state['workers']} workers; "
                             f"resume with the same (now {self.world} × {self.workers})")
        self.consumed = state["consumed"]
        self.states = {int(k): v for k, v in state["states"].items()}
