"""`cwm-tokenizer`: the tokenizer a recipe trains with, saved as a Hugging Face tokenizer directory.

Either a byte-level BPE learnt with `tokenizers` from the recipe's own documents, or an existing local Hugging
Face tokenizer adopted as it is. In both cases every token of `ALL_SPECIAL_TOKENS` (chat headers, the trace
separators of DESIGN.md §1) is one token: the model must see `<|frame_sep|>` as one symbol, never as pieces.

    cwm-tokenizer train --recipe data_recipes/demo.yaml --out runs/demo/tokenizer --vocab-size 1024
    cwm-tokenizer train --recipe R --out DIR --from /path/to/hf-tokenizer
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Iterable, Iterator

from cwm.data.special_tokens import ALL_SPECIAL_TOKENS, BOS, EOS, PAD


class TokenizerError(ValueError):
    """A tokenizer directory that cannot be used; one line naming it and what to do."""


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str | Path):
    """Learn a byte-level BPE on `texts`, with the special tokens first in the vocabulary; save and return it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(ALL_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   additional_special_tokens=[t for t in ALL_SPECIAL_TOKENS if t not in (BOS, EOS, PAD)])
    fast.save_pretrained(str(out_dir))
    return fast


def adopt(hf_dir: str | Path, out_dir: str | Path):
    """Copy a local Hugging Face tokenizer to `out_dir`, adding whichever special tokens it lacks."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"tokenizer {hf_dir}: not a loadable Hugging Face tokenizer directory ({e})") from None
    vocab = tok.get_vocab()
    missing = [t for t in ALL_SPECIAL_TOKENS if t not in vocab]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    for attr, token in (("bos_token", BOS), ("eos_token", EOS), ("pad_token", PAD)):
        if getattr(tok, attr) is None:
            setattr(tok, attr, token)
    tok.save_pretrained(str(out_dir))
    return tok


def load_tokenizer(path: str | Path):
    """A tokenizer directory made by this module (or any that keeps the special tokens whole)."""
    from transformers import AutoTokenizer

    if not Path(path, "tokenizer_config.json").exists():
        raise TokenizerError(f"tokenizer {path}: no tokenizer there; make one with "
                             f"`cwm-tokenizer train --recipe RECIPE --out {path}`")
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    for token in ALL_SPECIAL_TOKENS:
        if len(tok(token, add_special_tokens=False)["input_ids"]) != 1:
            raise TokenizerError(f"tokenizer {path}: special token {token} is not a single token; "
                                 f"rebuild it with `cwm-tokenizer train --from {path} --out NEW_DIR`")
    return tok


def recipe_texts(recipe, max_docs: int | None = None) -> Iterator[str]:
    """The training text of a recipe (held-out records excluded), source by source, each source's records once."""
    from cwm.data.documents import document_rng, iter_file_records, is_heldout, render_pieces, split_key

    per_source = None if max_docs is None else max(1, max_docs // len(recipe.sources))
    for source in recipe.sources:
        records = ((key, record) for path in source.files for key, record in iter_file_records(source, path)
                   if not is_heldout(split_key(key, record), source.holdout))
        for key, record in itertools.islice(records, per_source):
            yield "".join(text for text, _ in render_pieces(source, record, document_rng(recipe.seed, source, key, 0)))


def main(argv: list[str] | None = None) -> int:
    from cwm.data.recipe import RecipeError, load_recipe

    parser = argparse.ArgumentParser(prog="cwm-tokenizer", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="learn a byte-level BPE from a recipe's data, or adopt an HF tokenizer")
    train.add_argument("--recipe", help="recipe whose sources are the training text")
    train.add_argument("--out", required=True, help="output Hugging Face tokenizer directory")
    train.add_argument("--vocab-size", type=int, default=32000)
    train.add_argument("--max-docs", type=int, default=200_000, help="documents read from the recipe at most")
    train.add_argument("--from", dest="hf_dir", help="adopt this local HF tokenizer dir instead of training")
    args = parser.parse_args(argv)
    try:
        if args.hf_dir:
            tok = adopt(args.hf_dir, args.out)
        else:
            if not args.recipe:
                parser.error("train needs --recipe (or --from HF_DIR)")
            recipe = load_recipe(args.recipe)
            tok = train_bpe(recipe_texts(recipe, args.max_docs), args.vocab_size, args.out)
    except (RecipeError, TokenizerError) as e:
        print(f"cwm-tokenizer: {e}", file=sys.stderr)
        return 2
    print(f"cwm-tokenizer: wrote {args.out} ({len(tok)} tokens, {len(ALL_SPECIAL_TOKENS)} special)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
