"""Print a trace the model predicts beside the real one: `python -m cwm.eval.show_trace --hf DIR --recipe R`.

Loads an exported Hugging Face folder (as anyone would, with `AutoModelForCausalLM`), takes a held-out trace of
the recipe whose entry returned, gives the model the context and the call frame, lets it write the rest of the
trace greedily, and prints both frame by frame (✓ where the predicted frame is the real one).
"""
from __future__ import annotations

import argparse
import sys

from cwm.eval.trace_text import prompt_segments
from tracer.format import FRAME_SEP


def _frames(text: str) -> list[str]:
    return [f.strip() for f in text.split(FRAME_SEP) if f.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hf", required=True, help="exported model folder (cwm/train.py writes OUT/hf)")
    parser.add_argument("--recipe", required=True, help="recipe whose held-out traces to draw from")
    parser.add_argument("--source", help="trace source (default: the first with a holdout)")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    args = parser.parse_args(argv)

    import torch
    from rich.console import Console
    from rich.table import Table
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cwm.data.documents import iter_heldout
    from cwm.data.recipe import RecipeError, load_recipe
    from cwm.eval.world_model import WorldModelEval, examples_from_records

    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as e:
        print(f"show_trace: {e}", file=sys.stderr)
        return 2
    sources = [s for s in recipe.sources if s.kind == "trace" and (s.name == args.source or (not args.source and s.holdout))]
    examples = []
    if sources:
        for key, record in iter_heldout(sources[0]):
            if record.get("outcome") == "returned" and record["frames"][0]["kind"] == "call":
                examples = examples_from_records([(key, record)], sources[0])
                break
    if not examples:
        print(f"show_trace: recipe {args.recipe}: no held-out trace that returned", file=sys.stderr)
        return 2
    example = examples[0]
    model = AutoModelForCausalLM.from_pretrained(args.hf).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.hf)
    evaluator = WorldModelEval(tokenizer, [example], max_len=recipe.seq_len, max_new_tokens=args.max_new_tokens)
    given = prompt_segments(example.parts())
    prompt = "".join(t for t, _ in given)
    real = example.text[len(prompt):]
    with torch.no_grad():
        generated = evaluator.generate_trace(model, evaluator.encode(given), torch.device("cpu"))
    predicted = tokenizer.decode(generated, skip_special_tokens=False).replace(tokenizer.eos_token, "")

    console = Console(width=200)
    console.print("[bold]given to the model[/bold] (context and call frame):")
    console.print(prompt, markup=False, highlight=False)
    table = Table("#", "real trace", "predicted by the model", "", show_lines=False)
    real_frames, predicted_frames = _frames(real), _frames(predicted)
    same = 0
    for i in range(max(len(real_frames), len(predicted_frames))):
        r = real_frames[i] if i < len(real_frames) else ""
        p = predicted_frames[i] if i < len(predicted_frames) else ""
        same += r == p
        table.add_row(str(i + 1), r, p, "✓" if r == p else "✗")
    console.print(table)
    value, _ = evaluator.entry_result(generated)
    console.print(f"frames equal: {same}/{len(real_frames)}; returned value: real {example.value!r}, "
                  f"predicted {value!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
