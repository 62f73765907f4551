"""Does the model know what code does? Two CWM-style measures on held-out traces, run during training.

* Next-state prediction (teacher forcing): the model reads a true trace; a frame counts as predicted when the
  argmax at every token of its locals (`{LOCALS}<|action_sep|>`) is the true token. The entry frame (its
  arguments, which the context does not determine) is not scored.
* Output prediction: the model sees the context and the entry's call frame and generates the rest of the trace
  greedily; it is right when the entry's return (or exception) frame it writes has the true value, compared by
  `cwm.data.value_match.reprs_match` (the comparison eval and RL share: strict types, float tolerance).

Every rank runs the same evaluation on the same traces (FSDP needs every rank in every forward), so the
numbers are identical across ranks.
"""
from __future__ import annotations

import inspect
import json
import random
from dataclasses import dataclass

import torch

from cwm.data.value_match import reprs_match as same_value  # the name callers and tests use
from tracer.format import (ACTION_SEP, ARG_SEP, CALL_SEP, EXCEPTION_SEP, FRAME_SEP, LINE_SEP, RETURN_SEP)


@dataclass
class TraceExample:
    """One held-out trace: its rendered text and, when the entry left normally or raised, the true outcome."""
    text: str
    value: str | None
    raised: bool


def examples_from_records(records, source) -> list[TraceExample]:
    """Render held-out records as training would (fixed rng: the same text at every evaluation)."""
    from cwm.data.documents import step_in
    from tracer.format import render_trace

    out = []
    for key, record in records:
        text = render_trace(step_in(record, source.trace.depth, 1.0, random.Random(key)))
        entry_depth = record["frames"][0]["depth"] if record["frames"] else 0
        last = [f for f in record["frames"] if f["depth"] == entry_depth and f["kind"] in ("return", "exception")]
        done = record.get("outcome") in ("returned", "raised") and last
        out.append(TraceExample(text=text, value=last[-1]["value"] if done else None,
                                raised=bool(done) and last[-1]["kind"] == "exception"))
    return out


class WorldModelEval:
    def __init__(self, tokenizer, examples: list[TraceExample], *, max_len: int, max_new_tokens: int = 256,
                 max_outputs: int = 16):
        self.tokenizer, self.examples, self.max_len = tokenizer, examples, max_len
        self.max_new_tokens, self.max_outputs = max_new_tokens, max_outputs
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (ACTION_SEP, ARG_SEP, CALL_SEP, EXCEPTION_SEP,
                                                               FRAME_SEP, LINE_SEP, RETURN_SEP)}
        self.ids = ids
        self.opens = {ids[CALL_SEP], ids[LINE_SEP]}
        self.exits = {ids[RETURN_SEP], ids[EXCEPTION_SEP]}

    def encode(self, text: str) -> list[int]:
        return [self.tokenizer.bos_token_id] + self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def next_state(self, model, device) -> dict:
        """Frames whose locals the model predicts exactly under teacher forcing, over all scored frames."""
        frames = exact = 0
        for ex in self.examples:
            ids = self.encode(ex.text)[: self.max_len]
            x = torch.tensor([ids], device=device)
            pred = model(input_ids=x, position_ids=torch.arange(len(ids), device=device)[None]).logits[0].argmax(-1)
            hit = (pred[:-1] == x[0, 1:]).tolist()  # hit[j - 1]: token j predicted from its prefix
            opens = [i for i, t in enumerate(ids) if t in self.opens]
            for start in opens[1:]:  # opens[0] is the entry's call frame: its arguments are given, not predicted
                end = next((j for j in range(start + 1, len(ids)) if ids[j] == self.ids[ACTION_SEP]), None)
                if end is None:
                    break  # the frame runs past max_len
                frames += 1
                exact += all(hit[j - 1] for j in range(start + 1, end + 1))
        return {"eval/next_state_accuracy": exact / max(frames, 1), "eval/next_state_frames": frames}

    @torch.no_grad()
    def output_prediction(self, model, device) -> dict:
        """Entry results the model generates correctly from the context and the call frame alone."""
        scored = [ex for ex in self.examples if ex.value is not None][: self.max_outputs]
        correct = 0
        for ex in scored:
            prompt = ex.text[: ex.text.index(FRAME_SEP, ex.text.index(CALL_SEP)) + len(FRAME_SEP)]
            generated = self.generate_trace(model, self.encode(prompt), device)
            value, raised = self.entry_result(generated)
            correct += value is not None and raised == ex.raised and same_value(value, ex.value)
        return {"eval/output_accuracy": correct / max(len(scored), 1), "eval/output_functions": len(scored)}

    def generate_trace(self, model, prompt: list[int], device) -> list[int]:
        """Greedy continuation of a trace prompt until the entry's return frame ends (or EOS, or the budget).

        Uses the stock `sdpa` attention with a KV cache: the packed training kernel has no cache.
        """
        from transformers import DynamicCache

        trained_with = model.config._attn_implementation
        model.set_attn_implementation("sdpa")
        # transformers 5.25 renamed the forward's `past_key_values` to `cache` (the old name warns until 5.40)
        cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        try:
            cache, out, depth, closing = DynamicCache(), [], 1, False
            x = torch.tensor([prompt], device=device)
            position = torch.arange(len(prompt), device=device)[None]
            for _ in range(self.max_new_tokens):
                logits = model(input_ids=x, position_ids=position, use_cache=True, **{cache_arg: cache}).logits
                token = int(logits[0, -1].argmax())
                out.append(token)
                if token == self.tokenizer.eos_token_id or (closing and token == self.ids[FRAME_SEP]):
                    break
                if token == self.ids[CALL_SEP]:
                    depth += 1
                elif token in self.exits:
                    depth -= 1
                    closing = depth == 0
                x = torch.tensor([[token]], device=device)
                position = position[:, -1:] + 1
        finally:
            model.set_attn_implementation(trained_with)
        return out

    def entry_result(self, generated: list[int]) -> tuple[str | None, bool]:
        """(value repr, raised) of the entry's return/exception frame in a generated continuation, if complete."""
        text = self.tokenizer.decode(generated, skip_special_tokens=False)
        depth = 1
        for piece, sep in _split_frames(text):
            if sep == CALL_SEP:
                depth += 1
            elif sep in (RETURN_SEP, EXCEPTION_SEP):
                depth -= 1
                if depth == 0:
                    if ARG_SEP not in piece:
                        return None, False
                    try:
                        return json.loads(piece.split(ARG_SEP, 1)[1]), sep == EXCEPTION_SEP
                    except json.JSONDecodeError:
                        return None, False
        return None, False


def _split_frames(text: str):
    """(body, opening separator) of each complete frame in a generated trace continuation."""
    for frame in text.split(FRAME_SEP)[:-1]:
        frame = frame.lstrip("\n")  # the rendered format puts a newline after every frame separator
        for sep in (CALL_SEP, LINE_SEP, RETURN_SEP, EXCEPTION_SEP):
            if frame.startswith(sep):
                yield frame[len(sep):], sep
                break
