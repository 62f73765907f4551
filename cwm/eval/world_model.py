"""Does the model know what code does? The trainer's in-training evaluation on held-out traces, computed by the
same code as `cwm-eval trace-prediction` (cwm/eval/trace_prediction.py), on the in-memory model:

* Next-state prediction (teacher forcing): a frame's state (the locals through `<|action_sep|>` of a call or
  line frame; the value of a return or exception frame) counts as predicted when the argmax at each of its
  tokens is the true token. The entry frame (its arguments, which the context does not determine) is not scored.
  Reported over all frames and per frame kind.
* Output prediction: the model sees the context and the entry's call frame and generates the rest of the trace
  greedily (batched, KV cache); it is right when the entry leaves as the true trace does (returns, or raises)
  with the true value, compared by `cwm.data.value_match.reprs_match` (strict types, float tolerance).

Under `torch.distributed` the examples are split across ranks (every rank runs the same number of forwards,
padding its share with a repeat whose result is not counted, and generation keeps all ranks stepping together:
FSDP needs every rank in every forward) and the counts are summed, so every rank returns the same numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cwm.data.value_match import reprs_match as same_value  # the name callers and tests use
from cwm.eval.backends import SamplingParams, encode_prompt, generate_ids, greedy_next_tokens
from cwm.eval.trace_text import KINDS, entry_result, prompt_segments, text_segments
from cwm.eval.trace_prediction import TokenIds, teacher_forcing
from tracer.format import CALL_SEP, EXCEPTION_SEP, FRAME_SEP, RETURN_SEP


@dataclass
class TraceExample:
    """One held-out trace: its rendered text and, when the entry left normally or raised, the true outcome.
    `segments`: the renderer's (text, is_structure) pieces of `text`, what is tokenized (None: read back from the
    text, `trace_text.text_segments`)."""
    text: str
    value: str | None
    raised: bool
    segments: list[tuple[str, bool]] | None = None

    def parts(self) -> list[tuple[str, bool]]:
        if self.segments is None:
            self.segments = text_segments(self.text)
        return [(t, bool(s)) for t, s in self.segments]


def examples_from_records(records, source) -> list[TraceExample]:
    """Render held-out records as `cwm-eval trace-prediction` does (every call stepped into up to the source's
    depth, a fixed rng per key: the same text at every evaluation)."""
    from cwm.eval.trace_prediction import examples_from_records as rendered

    return [TraceExample(ex["text"], ex["value"], ex["raised"], ex["segments"])
            for ex in rendered(records, source.trace.depth)]


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _share(items: list, rank: int, world: int) -> tuple[list, int]:
    """This rank's items, padded (with its first item, or the first of all) to the same count on every rank;
    returns (items, how many of them count)."""
    mine = items[rank::world]
    size = math.ceil(len(items) / world) if items else 0
    counted = len(mine)
    filler = (mine or items)[:1]
    return mine + filler * (size - len(mine)), counted


def _sum_across_ranks(values: list[float], device) -> list[float]:
    import torch.distributed as dist

    if _rank_world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


class WorldModelEval:
    def __init__(self, tokenizer, examples: list[TraceExample], *, max_len: int, max_new_tokens: int = 256,
                 max_outputs: int = 16, batch_size: int = 8):
        self.tokenizer, self.examples, self.max_len = tokenizer, examples, max_len
        self.max_new_tokens, self.max_outputs, self.batch_size = max_new_tokens, max_outputs, batch_size
        self.tokens = TokenIds(tokenizer)
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (CALL_SEP, RETURN_SEP, EXCEPTION_SEP, FRAME_SEP)}
        self.ids = ids

    def encode(self, trace) -> list[int]:
        """Token ids of a trace (or a prefix of whole frames) as training tokenizes it (BOS, content ordinary,
        structure special; no EOS): a `TraceExample`, its (text, is_structure) segments, or rendered trace text
        (read back into segments, `trace_text.text_segments`)."""
        if isinstance(trace, TraceExample):
            trace = trace.parts()
        elif isinstance(trace, str):
            trace = text_segments(trace)
        return encode_prompt(self.tokenizer, trace)

    @torch.no_grad()
    def next_state(self, model, device) -> dict:
        """Frames whose state the model predicts exactly under teacher forcing, over all scored frames."""
        rank, world = _rank_world()
        mine, counted = _share(self.examples, rank, world)
        totals = {k: [0, 0] for k in KINDS}
        eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        for i, ex in enumerate(mine):
            ids = (self.encode(ex) + eos)[: self.max_len]
            (preds,) = greedy_next_tokens(model, [ids], device)
            if i < counted:
                for kind, (frames, exact, _) in teacher_forcing(ids, preds, self.tokens).items():
                    totals[kind][0] += frames
                    totals[kind][1] += exact
        flat = _sum_across_ranks([x for k in KINDS for x in totals[k]], device)
        totals = {k: flat[2 * i:2 * i + 2] for i, k in enumerate(KINDS)}
        frames = sum(c[0] for c in totals.values())
        out = {"eval/next_state_accuracy": sum(c[1] for c in totals.values()) / max(frames, 1),
               "eval/next_state_frames": int(frames)}
        out.update({f"eval/next_state/{k}": c[1] / c[0] for k, c in totals.items() if c[0]})
        return out

    @torch.no_grad()
    def output_prediction(self, model, device) -> dict:
        """Entry results the model generates correctly from the context and the call frame alone."""
        rank, world = _rank_world()
        scored = [ex for ex in self.examples if ex.value is not None][: self.max_outputs]
        mine, counted = _share(scored, rank, world)
        correct = 0
        for start in range(0, len(mine), self.batch_size):
            batch = mine[start:start + self.batch_size]
            generated = self.generate_traces(model, [self.encode(prompt_segments(ex.parts())) for ex in batch],
                                             device, synced=world > 1)
            for i, (ex, ids) in enumerate(zip(batch, generated), start):
                if i >= counted:
                    continue
                value, raised = self.entry_result(ids)
                correct += value is not None and raised == ex.raised and same_value(value, ex.value)
        right, total = _sum_across_ranks([correct, counted], device)
        return {"eval/output_accuracy": right / max(total, 1), "eval/output_functions": int(total)}

    def generate_traces(self, model, prompts: list[list[int]], device, synced: bool = False) -> list[list[int]]:
        """Greedy continuations of trace prompts (batched, KV cache), each until the entry's return frame is
        written (or EOS, or the budget)."""
        if not prompts:
            return []
        stop = _EntryReturned(self.ids, len(prompts), max(len(p) for p in prompts))
        rows = generate_ids(model, self.tokenizer, prompts, SamplingParams(max_tokens=self.max_new_tokens),
                            device=device, stopping_criteria=[stop], synced=synced)
        return [samples[0][0] for samples in rows]

    def generate_trace(self, model, prompt: list[int], device) -> list[int]:
        """One prompt's greedy continuation (`generate_traces`)."""
        return self.generate_traces(model, [prompt], device)[0]

    def entry_result(self, generated: list[int]) -> tuple[str | None, bool]:
        """(value repr, raised) of how the entry left in a generated continuation (`trace_text.entry_result`)."""
        return entry_result(self.tokenizer.decode(generated, skip_special_tokens=False))


class _EntryReturned:
    """A stopping criterion: a row is done once the frame that ends the entry is complete.

    Depth is followed from the frame kinds as `trace_text.entry_result` follows it: a call enters a scope, a
    return leaves one, and an exception frame right after another exception frame means the exception left the
    scope it was raised in (a caught one is followed by any other frame). So a callee that raises inside a `try`
    of the entry does not leave the count one too deep. (An entry that raises itself ends the trace: EOS stops it.)
    """

    def __init__(self, ids: dict, rows: int, width: int):
        self.call, self.ret, self.exc, self.frame = ids[CALL_SEP], ids[RETURN_SEP], ids[EXCEPTION_SEP], ids[FRAME_SEP]
        self.depth = [1] * rows
        self.kind = [None] * rows            # the kind token of the frame being written
        self.after_exception = [False] * rows  # the last complete frame was an exception frame
        self.closing = [False] * rows        # the frame being written ends the entry
        self.done = [False] * rows
        self.seen = width

    def __call__(self, input_ids, scores, **kwargs):
        for row in range(input_ids.shape[0]):
            for token in input_ids[row, self.seen:].tolist():
                if self.done[row]:
                    break
                if token == self.frame:
                    self.done[row] = self.closing[row]
                    self.after_exception[row], self.kind[row] = self.kind[row] == self.exc, None
                    continue
                if token == self.call:
                    self.depth[row] += 1
                elif token == self.ret or (token == self.exc and self.after_exception[row]):
                    self.depth[row] -= 1
                    self.closing[row] = self.depth[row] == 0
                if token in (self.call, self.ret, self.exc):
                    self.kind[row] = token
        self.seen = input_ids.shape[1]
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

