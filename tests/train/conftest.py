"""Fixtures for the training tests: small corpora written on the fly, a tokenizer learnt from them, recipes."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

WORDS = ["def", "return", "for", "in", "range", "if", "else", "x", "y", "total", "+", "=", "(", ")", ":"]


def write_jsonl_corpus(folder: Path, name: str, files: int, docs_per_file: int, seed: int) -> list[str]:
    """`files` jsonl files of unique documents ("<name> <n>: words..."); returns every document text."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for f in range(files):
        with open(folder / f"{name}-{f}.jsonl", "w") as out:
            for _ in range(docs_per_file):
                text = f"{name} {len(texts)}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60)))
                texts.append(text)
                out.write(json.dumps({"text": text}) + "\n")
    return texts


def write_recipe(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Two jsonl sources (`alpha`: 3 files, `beta`: 2 files) and a BPE tokenizer learnt from them."""
    from cwm.data.tokenizer import train_bpe

    root = tmp_path_factory.mktemp("corpus")
    alpha = write_jsonl_corpus(root / "alpha", "alpha", files=3, docs_per_file=40, seed=1)
    beta = write_jsonl_corpus(root / "beta", "beta", files=2, docs_per_file=40, seed=2)
    train_bpe(alpha + beta, vocab_size=320, out_dir=root / "tokenizer")
    return {"root": root, "alpha": alpha, "beta": beta, "tokenizer": str(root / "tokenizer")}


@pytest.fixture
def jsonl_recipe(corpus, tmp_path):
    """Factory: a recipe over the two jsonl sources, written into the test's tmp dir."""
    def make(*, alpha_weight=0.7, seq_len=64, window=4, beta_epochs="null", holdout=0.0, extra="",
             name="recipe.yaml") -> Path:
        return _jsonl_recipe(corpus, tmp_path / name, alpha_weight=alpha_weight, seq_len=seq_len, window=window,
                             beta_epochs=beta_epochs, holdout=holdout, extra=extra)
    return make


def _jsonl_recipe(corpus, path: Path, *, alpha_weight, seq_len, window, beta_epochs, holdout, extra) -> Path:
    root = corpus["root"]
    return write_recipe(path, f"""
seq_len: {seq_len}
tokenizer: {corpus['tokenizer']}
pack_window_rows: {window}
sources:
  alpha: {{kind: jsonl, paths: ["{root}/alpha/*.jsonl"], weight: {alpha_weight}, holdout: {holdout}}}
  beta: {{kind: jsonl, paths: ["{root}/beta/*.jsonl"], weight: {1 - alpha_weight:.6f}, epochs: {beta_epochs}}}
{extra}""")
