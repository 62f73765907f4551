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
    """A stable split by key: the same records are held out in every run, rank and epoch. Pass `split_key`'s key:
    a trace record's split follows its unit of origin."""
    if fraction <= 0.0:
        return False
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32 < fraction


def split_key(key: str, record) -> str:
    """What the held-out split of a record is decided by: for a trace record, its unit of origin (`origin.unit`:
    the test or function call it was cut from), so a test's own trace and the function episodes cut from it are
    held out, or trained on, together; for anything else (and traces written before units were recorded) its key.
    """
    if isinstance(record, dict):
        origin = record.get("origin")
        if isinstance(origin, dict):
            unit = origin.get("unit")
            if isinstance(unit, str) and unit:
                return "unit:" + unit
    return key


def document_rng(seed: int, source: Source, key: str, epoch: int) -> random.Random:
    return random.Random(f"{seed}/{source.name}/{key}/{epoch}")


class Structure(str):
    """Document text a renderer put there as structure (a trace's separators, a chat header): the special-token
    strings in it become their single ids. Every other piece of text is content (a value, a source line, a tool's
    output, a code file) and is encoded with special-token recognition off, so no content can forge structure."""
    __slots__ = ()


def render_pieces(source: Source, record, rng: random.Random) -> list[tuple[str, bool]]:
    """A record as (text, in_loss) pieces, in order; concatenated they are the document's text. A piece whose text
    is a `Structure` holds the renderer's special tokens; any other text is content (see `tokenize_pieces`)."""
    if source.kind == "trace":
        from tracer.format import trace_segments

        record = step_in(record, source.trace.depth, source.trace.step_in_prob, rng)
        return structure_pieces(trace_segments(record))
    if source.kind == "trajectory":
        mask_observations = rng.random() < source.observation_mask_prob
        return [(text, not (is_observation and mask_observations))
                for text, is_observation in trajectory_pieces(record)]
    if source.kind == "text":
        return [(record, True)]
    value = record.get(source.text_key) if isinstance(record, dict) else None
    if not isinstance(value, str):
        raise ValueError(f"source {source.name}: record has no string field '{source.text_key}'")
    return [(value, True)]


def trajectory_pieces(record: dict) -> list[tuple[str, bool]]:
    """(text, is_observation) pieces of a trajectory's chat document, its messages' contents apart from the
    renderer's text (`Structure`): whatever renders the chat format, it is asked to render the record with each
    content replaced by a stand-in that occurs nowhere else, and the real contents are put back where the
    stand-ins came out. A tool observation holding `<|eot_id|>` stays text."""
    from cwm.data.chat import trajectory_segments

    messages = record["messages"]
    mark = _stand_in_mark(messages)
    stand_in = {**record, "messages": [{**m, "content": f"{mark}{i}{mark}"} for i, m in enumerate(messages)]}
    pieces: list[tuple[str, bool]] = []
    for text, is_observation in trajectory_segments(stand_in):
        for j, part in enumerate(text.split(mark)):
            if j % 2:
                content = messages[int(part)]["content"]
                if content:
                    pieces.append((content, is_observation))
            elif part:
                pieces.append((Structure(part), is_observation))
    return pieces


def _stand_in_mark(messages: list[dict]) -> str:
    """A private-use character that no message holds (content or any other field)."""
    seen = "".join(str(v) for m in messages for v in m.values())
    for code in range(0xE000, 0xF900):
        if chr(code) not in seen:
            return chr(code)
    raise ValueError("a trajectory holds every private-use character: no stand-in mark is left")


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


def structure_pieces(segments, in_loss: bool = True) -> list[tuple[str, bool]]:
    """(text, is_structure) segments (what `tracer.format.trace_segments` and `chat_prompt_segments` give) as
    (text, in_loss) pieces: a structure segment's text becomes a `Structure`, any other stays content."""
    return [(Structure(text) if is_structure else str(text), in_loss) for text, is_structure in segments]


def encode_pieces(tokenizer, pieces: list[tuple[str, bool]]) -> list[list[int]]:
    """Each piece's token ids, by the rule of `tokenize_pieces` (content ordinary, structure special)."""
    special = _special_ids(tokenizer)
    encoded: list = [None] * len(pieces)
    content, markup = [], []
    for i, (text, _) in enumerate(pieces):
        if type(text) is Structure:
            token = special.get(text)
            if token is not None:
                encoded[i] = [token]
            else:
                markup.append(i)
        else:
            content.append(i)
    for indices, split in ((content, True), (markup, False)):
        if indices:
            batch = tokenizer([str(pieces[i][0]) for i in indices], add_special_tokens=False,
                              split_special_tokens=split)["input_ids"]
            for i, piece in zip(indices, batch):
                encoded[i] = piece
    return encoded


def tokenize_pieces(tokenizer, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[bool]]:
    """Token ids and loss mask of a document: BOS, the pieces, EOS (the end of a trace or file is predicted).

    Content (any text but a `Structure`) is encoded with special-token recognition off, as CWM's tokenizer encodes
    everything but the structure it adds (`encode_ordinary`): a special-token string inside a value, a source line
    or a tool observation becomes ordinary tokens. A `Structure` piece that is exactly one special token is that
    token's id. Pieces are encoded one by one (each a batch call), so no token spans two pieces, as in CWM's demo.
    """
    ids = [tokenizer.bos_token_id]
    mask = [False]
    for (_, in_loss), piece in zip(pieces, encode_pieces(tokenizer, pieces)):
        ids.extend(piece)
        mask.extend([in_loss] * len(piece))
    ids.append(tokenizer.eos_token_id)
    mask.append(True)
    return ids, mask


def prompt_ids(tokenizer, segments, *, bos: bool = True) -> list[int]:
    """Token ids of a model prompt given as (text, is_structure) segments, exactly the ids `tokenize_pieces` gives a
    training document that starts with the same segments: BOS (when `bos` and the tokenizer has one), then each
    segment (content with special-token recognition off, structure special), no EOS. A `str` is one content
    segment: a prompt's special tokens must come from a renderer's structure segments, never from its text."""
    if isinstance(segments, str):
        segments = [(segments, False)]
    ids = [tokenizer.bos_token_id] if bos and tokenizer.bos_token_id is not None else []
    for piece in encode_pieces(tokenizer, structure_pieces(segments)):
        ids.extend(piece)
    return ids


def chat_prompt_segments(messages: list[dict]) -> list[tuple[str, bool]]:
    """`cwm.data.chat.prompt_text(messages)` as (text, is_structure) segments, split as training splits a
    trajectory (`trajectory_pieces`): the chat scaffolding is structure, every message's content is content."""
    from cwm.data.special_tokens import chat_header

    segments = [(str(text), type(text) is Structure)
                for text, _ in trajectory_pieces({"messages": [dict(m) for m in messages]})]
    return segments + [(chat_header("assistant"), True)]


def _special_ids(tokenizer) -> dict[str, int]:
    """{special-token string: id} of the tokenizer's added tokens (kept on the tokenizer object)."""
    found = getattr(tokenizer, "_cwm_special_ids", None)
    if found is None:
        found = {t: i for t, i in tokenizer.get_added_vocab().items()}
        try:
            tokenizer._cwm_special_ids = found
        except AttributeError:
            pass
    return found


def segments_from_ids(tokenizer, ids: list[int], structure=None) -> list[tuple[str, bool]]:
    """Token ids as (text, is_structure) segments: structure where a special token's id stands (only the tokens in
    `structure`, when given), the ids between decoded as content; BOS and EOS dropped. `prompt_ids` on the
    segments (this tokenizer or another's) keeps content content: re-encoding never turns a model's or a tool's
    text into special tokens."""
    drop = (tokenizer.bos_token_id, tokenizer.eos_token_id)
    by_id = {i: t for t, i in _special_ids(tokenizer).items() if structure is None or t in structure}
    segments: list[tuple[str, bool]] = []
    run: list[int] = []
    for token in ids:
        if token in drop:
            continue
        if token in by_id:
            if run:
                segments.append((tokenizer.decode(run, clean_up_tokenization_spaces=False), False))
                run = []
            segments.append((by_id[token], True))
        else:
            run.append(token)
    if run:
        segments.append((tokenizer.decode(run, clean_up_tokenization_spaces=False), False))
    return segments


def trace_segments_from_ids(tokenizer, ids: list[int]) -> list[tuple[str, bool]]:
    """Token ids of a trace (a model's output, a tokenized document) as `tracer.format.parse_trace` segments:
    structure only where a trace token's id stands, the ids between decoded as content."""
    from tracer.format import TRACE_TOKENS

    return segments_from_ids(tokenizer, ids, TRACE_TOKENS)


def iter_heldout(source: Source) -> Iterator[tuple[str, object]]:
    """(key, record) of every record the training loader leaves out of `source` (its `holdout` fraction, decided by
    `split_key`), except, for traces, one whose frames occur frame for frame in a record the loader trains on (the
    same call in another test, a callee a training test steps into): that one is seen in training, not held out.

    Traces are read twice: once to index what training holds (an 8-byte digest per frame), then the held-out ones.
    """
    if source.holdout <= 0.0:
        return
    if source.kind != "trace":
        for path in source.files:
            for key, record in iter_file_records(source, path):
                if is_heldout(split_key(key, record), source.holdout):
                    yield key, record
        return
    trained = []
    for path in source.files:
        for key, record in iter_file_records(source, path):
            if not is_heldout(split_key(key, record), source.holdout):
                trained.append(frame_digests(record))
    # One byte string, each record's digests behind an 8-byte gap no digest equals: a match of a held-out record's
    # digests at an 8-aligned offset is a run of whole frames inside one training record.
    haystack = _GAP + _GAP.join(trained) + _GAP
    for path in source.files:
        for key, record in iter_file_records(source, path):
            if is_heldout(split_key(key, record), source.holdout) and not _occurs_in(frame_digests(record), haystack):
                yield key, record


_GAP = bytes(8)


def frame_digests(record: dict) -> bytes:
    """An 8-byte digest per frame of a trace (its kind, place, locals and value: what a model is shown; the depth
    is left out, as a callee's frames stand one level deeper inside its caller's trace), never `_GAP`."""
    out = []
    for frame in record.get("frames") or ():
        data = json.dumps([frame.get("kind"), frame.get("path"), frame.get("line"), frame.get("source"),
                           frame.get("locals"), frame.get("value")], ensure_ascii=False).encode("utf-8", "replace")
        digest = hashlib.blake2b(data, digest_size=8).digest()
        out.append(digest if digest != _GAP else b"\x01" * 8)
    return b"".join(out)


def _occurs_in(needle: bytes, haystack: bytes) -> bool:
    if not needle:
        return False
    at = haystack.find(needle)
    while at >= 0:
        if at % 8 == 0:
            return True
        at = haystack.find(needle, at + 1)
    return False
