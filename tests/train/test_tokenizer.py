"""`cwm-tokenizer`: every special token is one token, text round-trips, an adopted HF tokenizer gains the tokens."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cwm.data.special_tokens import ALL_SPECIAL_TOKENS
from cwm.data.tokenizer import adopt, load_tokenizer

ROOT = Path(__file__).resolve().parents[2]


def test_cli_trains_a_bpe_with_whole_special_tokens(corpus, jsonl_recipe, tmp_path):
    recipe = jsonl_recipe()
    out = tmp_path / "tok"
    run = subprocess.run([str(Path(sys.executable).parent / "cwm-tokenizer"), "train", "--recipe", str(recipe),
                          "--out", str(out), "--vocab-size", "300"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    tok = load_tokenizer(out)
    text = "".join(ALL_SPECIAL_TOKENS) + corpus["alpha"][0] + "<|frame_sep|>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    for i, token in enumerate(ALL_SPECIAL_TOKENS):
        assert tok.convert_ids_to_tokens(ids[i]) == token
    assert tok.decode(ids) == text
    assert len(ids) < len(text) / 2  # the merges compress the corpus text


def test_adopting_a_tokenizer_adds_missing_special_tokens(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bare = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1, "b": 2}, unk_token="<unk>"))
    bare.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=bare, unk_token="<unk>").save_pretrained(str(tmp_path / "hf"))
    adopt(tmp_path / "hf", tmp_path / "adopted")
    tok = load_tokenizer(tmp_path / "adopted")  # raises unless each special token is one token
    assert len(tok) == 3 + len(ALL_SPECIAL_TOKENS)
    assert tok.bos_token == "<|begin_of_text|>" and tok.pad_token == "<|pad|>"


def test_missing_tokenizer_names_the_fix(tmp_path):
    import pytest

    from cwm.data.tokenizer import TokenizerError

    with pytest.raises(TokenizerError, match="cwm-tokenizer train"):
        load_tokenizer(tmp_path / "none")
