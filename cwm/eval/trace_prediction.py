"""Trace prediction on held-out trace shards (DESIGN §2 records): does the model know what code does, step by step?

Each record is rendered as mid-training renders it (`step_in` to `depth`, every call stepped into, a fixed rng
per record key) and scored two ways, by frame kind (call, line, return, exception):

- Teacher forcing (next-state exact match): the model reads the true trace; a frame's STATE is predicted when
  the argmax at each of its tokens is the true token, given the true prefix. STATE is, for call and line frames,
  the locals through `<|action_sep|>` (the program state on arriving: the in-training eval's definition), for
  return and exception frames the value through `<|frame_sep|>`. FRAME counts every token of the frame, its kind
  token and source line included. The entry's call frame (its arguments: the context does not determine them) is
  not scored; frames past `max_len` tokens are not scored.
- Generation: the model gets the context and the entry's call frame and writes the rest greedily. Scored: the
  frames right up to the first wrong one (compared by `trace_text.frame_key`: kind, locals, source, value) (a prefix, as a fraction of the true frames, and per kind), the whole
  trace exact, and the entry's result (return value, or the exception) right by `value_match`.

An example's `score` is its next-state accuracy (teacher forcing), or its right-prefix fraction when only
generation ran (`--mode generation`, e.g. a server that gives no prompt log-probabilities).
"""
from __future__ import annotations

import random

from cwm.data.value_match import reprs_match
from cwm.eval.backends import Backend, BackendError, Prompt, SamplingParams
from cwm.eval.trace_text import KINDS, entry_result, frame_key, prompt_segments, split_frames, text_segments
from tracer.format import ACTION_SEP, ARG_SEP, CALL_SEP, EXCEPTION_SEP, FRAME_SEP, LINE_SEP, RETURN_SEP

FORMAT = "trace shards written by cwm-trace (a folder with manifest.json, .tar files, or a glob)"


def render_example(key: str, record: dict, depth: int) -> list[tuple[str, bool]]:
    """The record's (text, is_structure) segments (`tracer.format.trace_segments`), as mid-training renders it."""
    from cwm.data.documents import step_in
    from tracer.format import trace_segments

    return [(t, bool(s)) for t, s in trace_segments(step_in(record, depth, 1.0, random.Random(key)))]


def example_segments(ex: dict) -> list[tuple[str, bool]]:
    """An example's segments: those it was rendered with, or (an example that kept only its text) read back from
    the text (`trace_text.text_segments`)."""
    segments = ex.get("segments")
    return [(t, bool(s)) for t, s in segments] if segments is not None else text_segments(ex["text"])


def examples_from_records(items, depth: int) -> list[dict]:
    """(key, record) pairs -> examples: records whose first frame is a call (the entry), rendered: "segments" (the
    renderer's pieces, what is tokenized: content ordinary, structure special) and "text" (them joined)."""
    out = []
    for key, record in items:
        frames = record.get("frames") or []
        if not frames or frames[0].get("kind") != "call":
            continue
        entry = frames[0]["depth"]
        ends = [f for f in frames if f["depth"] == entry and f["kind"] in ("return", "exception")]
        done = record.get("outcome") in ("returned", "raised") and ends
        segments = render_example(str(key), record, depth)
        out.append({"id": str(key), "text": "".join(t for t, _ in segments), "segments": segments,
                    "value": ends[-1]["value"] if done else None,
                    "raised": bool(done) and ends[-1]["kind"] == "exception"})
    return out


def load_shards(source, depth: int, limit: int | None = None) -> list[dict]:
    from cwm.data.shards import iter_records, record_key
    from cwm.eval.harness import EvalInputError

    items = []
    try:
        for record in iter_records(source):
            if not isinstance(record, dict) or "frames" not in record:
                raise EvalInputError(f"{source}: holds a record that is not a trace (no 'frames'); expected {FORMAT}")
            items.append((str(record.get("id") or record_key(record)), record))
    except FileNotFoundError as e:
        raise EvalInputError(f"{e}") from None
    except (OSError, ValueError) as e:
        if isinstance(e, EvalInputError):
            raise
        raise EvalInputError(f"{source}: not readable as trace shards ({e}); expected {FORMAT}") from None
    examples = examples_from_records(items, depth)
    if not examples:
        raise EvalInputError(f"{source}: no trace whose first frame is a call; expected {FORMAT}")
    return examples[:limit] if limit else examples


class TokenIds:
    """The ids of the trace structure tokens in a tokenizer (each must be one token)."""

    def __init__(self, tokenizer):
        if tokenizer is None:
            raise BackendError("trace-prediction's teacher forcing needs a tokenizer: use --model DIR, a server "
                               "model that is a local folder, --tokenizer DIR, or --mode generation")
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (ACTION_SEP, ARG_SEP, CALL_SEP, EXCEPTION_SEP,
                                                               FRAME_SEP, LINE_SEP, RETURN_SEP)}
        bad = [t for t, i in ids.items() if not isinstance(i, int) or i == tokenizer.unk_token_id]
        if bad:
            raise BackendError(f"the tokenizer has no token {', '.join(bad)}: it was not made for traces "
                               "(cwm-tokenizer adds them)")
        self.action, self.arg, self.frame = ids[ACTION_SEP], ids[ARG_SEP], ids[FRAME_SEP]
        self.kind = {ids[CALL_SEP]: "call", ids[LINE_SEP]: "line", ids[RETURN_SEP]: "return",
                     ids[EXCEPTION_SEP]: "exception"}


def frame_spans(ids: list[int], tokens: TokenIds) -> list[tuple[str, range, range]]:
    """(kind, state positions, frame positions) of every complete frame in `ids` (the first call frame
    included: callers skip it)."""
    spans = []
    for start, token in enumerate(ids):
        kind = tokens.kind.get(token)
        if kind is None:
            continue
        end = next((j for j in range(start + 1, len(ids)) if ids[j] == tokens.frame), None)
        if end is None:
            break   # cut by max_len
        if kind in ("call", "line"):
            mark = next((j for j in range(start + 1, end) if ids[j] == tokens.action), None)
            state = range(start + 1, mark + 1) if mark is not None else range(start + 1, end + 1)
        else:
            mark = next((j for j in range(start + 1, end) if ids[j] == tokens.arg), None)
            state = range(mark + 1, end + 1) if mark is not None else range(start + 1, end + 1)
        spans.append((kind, state, range(start, end + 1)))
    return spans


def teacher_forcing(ids: list[int], preds: list[int], tokens: TokenIds) -> dict:
    """Per kind: frames scored, frames whose state is exact, frames exact as a whole."""
    hit = [preds[j - 1] == ids[j] for j in range(1, len(ids))]   # hit[j - 1]: token j from its prefix
    counts = {k: [0, 0, 0] for k in KINDS}
    for kind, state, frame in frame_spans(ids, tokens)[1:]:
        c = counts[kind]
        c[0] += 1
        c[1] += all(hit[j - 1] for j in state)
        c[2] += all(hit[j - 1] for j in frame if j > 0)
    return {k: v for k, v in counts.items() if v[0]}


def generation_scores(true_continuation: str, generated: str, value: str | None, raised: bool) -> dict:
    truth, made = split_frames(true_continuation), split_frames(generated)
    prefix = 0
    while prefix < len(truth) and prefix < len(made) and frame_key(*made[prefix]) == frame_key(*truth[prefix]):
        prefix += 1
    by_kind = {}
    for i, (kind, _) in enumerate(truth):
        c = by_kind.setdefault(kind, [0, 0])
        c[0] += 1
        c[1] += i < prefix
    got, got_raised = entry_result(generated)
    result_right = None
    if value is not None:
        result_right = got is not None and got_raised == raised and reprs_match(got, value)
    return {"frames": len(truth), "prefix": prefix, "exact": prefix == len(truth) and len(made) >= len(truth),
            "by_kind": by_kind, "result_right": result_right, "result": got}


class TracePrediction:
    name = "trace-prediction"

    def __init__(self, mode: str = "both", max_len: int = 2048, depth: int = 2):
        if mode not in ("both", "teacher-forcing", "generation"):
            raise ValueError(f"--mode {mode}: use both, teacher-forcing or generation")
        self.mode, self.max_len, self.depth = mode, max_len, depth

    def settings(self) -> dict:
        return {"mode": self.mode, "max_len": self.max_len, "depth": self.depth}

    def default_params(self) -> dict:
        return {"max_tokens": 1024}

    def run(self, backend: Backend, examples: list[dict], params: SamplingParams) -> list[dict]:
        segments = [example_segments(ex) for ex in examples]
        prompt_parts = [prompt_segments(s) for s in segments]
        rows = [{"id": ex["id"], "prompt": "".join(t for t, _ in p)} for ex, p in zip(examples, prompt_parts)]
        if self.mode in ("both", "teacher-forcing"):
            tokens = TokenIds(backend.tokenizer)
            eos = backend.tokenizer.eos_token_id
            seqs = [(backend.encode(s) + ([eos] if eos is not None else []))[:self.max_len] for s in segments]
            for row, ids, preds in zip(rows, seqs, backend.greedy_next_tokens(seqs)):
                counts = teacher_forcing(ids, preds, tokens)
                row["next_state"] = counts
                scored = sum(c[0] for c in counts.values())
                row["score"] = sum(c[1] for c in counts.values()) / scored if scored else 0.0
        if self.mode in ("both", "generation"):
            prompts = [Prompt.of_segments(ex["id"], p, oracle="".join(t for t, _ in s[len(p):]))
                       for ex, p, s in zip(examples, prompt_parts, segments)]
            greedy = SamplingParams(n=1, temperature=0.0, max_tokens=params.max_tokens, seed=params.seed)
            for ex, row, prompt, (generated,) in zip(examples, rows, prompts, backend.generate(prompts, greedy)):
                gen = generation_scores(prompt.oracle, generated, ex["value"], ex["raised"])
                row.update(answer=generated, generation=gen)
                if "score" not in row:
                    row["score"] = gen["prefix"] / max(gen["frames"], 1)
        return rows

    def summary(self, rows: list[dict]) -> dict:
        out: dict = {}
        if any("next_state" in r for r in rows):
            totals = {k: [0, 0, 0] for k in KINDS}
            for r in rows:
                for kind, c in r.get("next_state", {}).items():
                    totals[kind] = [a + b for a, b in zip(totals[kind], c)]
            frames = sum(c[0] for c in totals.values())
            out["next_state_accuracy"] = sum(c[1] for c in totals.values()) / max(frames, 1)
            out["frame_accuracy"] = sum(c[2] for c in totals.values()) / max(frames, 1)
            out["next_state_frames"] = frames
            for kind, c in totals.items():
                if c[0]:
                    out[f"next_state/{kind}"] = c[1] / c[0]
                    out[f"frame/{kind}"] = c[2] / c[0]
        gens = [r["generation"] for r in rows if "generation" in r]
        if gens:
            out["generation/prefix"] = sum(g["prefix"] / max(g["frames"], 1) for g in gens) / len(gens)
            out["generation/exact_traces"] = sum(g["exact"] for g in gens) / len(gens)
            results = [g["result_right"] for g in gens if g["result_right"] is not None]
            if results:
                out["generation/result_accuracy"] = sum(results) / len(results)
            kinds: dict = {}
            for g in gens:
                for kind, (n, ok) in g["by_kind"].items():
                    kinds.setdefault(kind, [0, 0])
                    kinds[kind][0] += n
                    kinds[kind][1] += ok
            for kind in KINDS:
                if kind in kinds:
                    out[f"generation/prefix/{kind}"] = kinds[kind][1] / kinds[kind][0]
        return out
