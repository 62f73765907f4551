"""`--model.init DIR`: continuing a pretrained Hugging Face model (Llama, Qwen2, Qwen3, Mistral, Cwm).

A small random model saved with `save_pretrained`, with a BPE tokenizer that has none of the toolkit's special
tokens, stands in for a pretrained one. The trainer runs in this process (`cwm.train.main`).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

WORDS = ["def", "return", "for", "in", "range", "if", "else", "x", "y", "total", "+", "=", "(", ")", ":"]
ARCHS = ["llama", "qwen2", "qwen3", "mistral", "cwm"]
STEPS = 10


def _texts(n=160, seed=0):
    rng = random.Random(seed)
    return [f"doc {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60))) for i in range(n)]


def _tokenizer(texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainer=trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def small_config(arch: str, vocab: int, eos: int):
    """A few-layer model of `arch` with head_dim 32 (vLLM's CPU attention serves 32 and 64, not 16)."""
    import transformers

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=32, eos_token_id=eos,
                  max_position_embeddings=256)
    if arch == "llama":
        return transformers.LlamaConfig(**common)
    if arch == "qwen2":  # tied input and output embeddings, with q/k/v biases
        return transformers.Qwen2Config(**common, tie_word_embeddings=True)
    if arch == "qwen3":
        return transformers.Qwen3Config(**common, tie_word_embeddings=False)
    if arch == "mistral":  # every layer's attention a sliding window, shorter than the test's documents
        return transformers.MistralConfig(**common, sliding_window=16)
    return transformers.CwmConfig(**{**common, "num_hidden_layers": 4}, sliding_window=16, tie_word_embeddings=False,
                                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def save_pretrained_stand_in(folder: Path, arch: str, texts, seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM

    tok = _tokenizer(texts)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(small_config(arch, len(tok), tok.eos_token_id))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    from stand_ins import one_source_recipe  # here, not at the top: a subprocess imports this module bare

    texts = _texts()
    return {"root": root, "texts": texts, "recipe": one_source_recipe(root, texts)}


def _train(world, init: Path, out: Path, *extra: str) -> int:
    from cwm.train import main

    return main(["--recipe", str(world["recipe"]), "--model.init", str(init), "--out", str(out),
                 "--training.steps", str(STEPS), "--optim.lr", "5e-3", "--optim.warmup_steps", "2",
                 "--log.every", "1", "--log.tensorboard", "false", "--training.cpu_threads", "1",
                 "--training.loss_chunk", "48", *extra])


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


@pytest.fixture(scope="module", params=ARCHS)
def runs(request, world):
    """Per architecture: the stand-in, a straight run, and a run stopped at step 4 and resumed."""
    arch, root = request.param, world["root"]
    init = save_pretrained_stand_in(root / f"{arch}-init", arch, world["texts"])
    assert _train(world, init, root / f"{arch}-straight") == 0
    assert _train(world, init, root / f"{arch}-resumed", "--training.stop_after", "4", "--export", "false") == 0
    assert _train(world, init, root / f"{arch}-resumed") == 0
    return {"arch": arch, "init": init, "straight": root / f"{arch}-straight", "resumed": root / f"{arch}-resumed"}


def _packed_vs_documents(model_dir: Path, vocab: int):
    """Logits of three documents packed in one row (cwm_packed) and of each document alone (sdpa)."""
    from transformers import AutoModelForCausalLM

    from cwm.data.packing import Document, make_batch
    from cwm.model.attention import model_inputs, register

    register()
    packed = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="cwm_packed").eval()
    alone = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    g = torch.Generator().manual_seed(1)
    docs = [Document(torch.randint(0, vocab, (n,), generator=g).tolist()) for n in (37, 5, 50)]
    batch = make_batch(docs, 96, pad_id=0)
    inputs = {k: v for k, v in model_inputs(batch).items() if k != "labels"}
    with torch.no_grad():
        row = packed(**inputs).logits[0]
        start = 0
        for doc in docs:
            n = len(doc.input_ids)
            own = alone(input_ids=torch.tensor([doc.input_ids])).logits[0]
            torch.testing.assert_close(row[start:start + n], own, rtol=1e-4, atol=1e-4)
            start += n


@pytest.mark.parametrize("arch", ARCHS)
def test_packed_row_logits_equal_per_document_logits(world, tmp_path, arch):
    init = save_pretrained_stand_in(tmp_path / arch, arch, world["texts"])
    _packed_vs_documents(init, vocab=250)


def test_special_tokens_added_single_ids_and_old_rows_unchanged(runs):
    """Step 0 of the run: the stand-in's rows as they were; the added tokens one id each, at the rows' mean."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from cwm.data.special_tokens import ALL_SPECIAL_TOKENS
    from cwm.model import pretrained
    from cwm.train import build_model, parse_args

    original = load_file(str(runs["init"] / "model.safetensors"))
    old_tok = AutoTokenizer.from_pretrained(runs["init"])
    new_tok = AutoTokenizer.from_pretrained(runs["straight"] / "tokenizer")
    assert all(new_tok.convert_tokens_to_ids(t) == old_tok.convert_tokens_to_ids(t) for t in old_tok.get_vocab())
    for token in ALL_SPECIAL_TOKENS:
        assert len(new_tok(token, add_special_tokens=False)["input_ids"]) == 1, token
    old_vocab = len(old_tok)
    assert len(new_tok) > old_vocab

    cfg = parse_args(["--recipe", str(runs["straight"].parent / "recipe.yaml"), "--model.init", str(runs["init"])])
    model, config, *_ = build_model(cfg, __import__("cwm.data.recipe", fromlist=["load_recipe"]).load_recipe(cfg.recipe),
                                    runs["straight"].parent / "step0", torch.device("cpu"), None,
                                    bf16=False, ac=False, say=print)
    assert config.vocab_size == len(new_tok)
    state = model.state_dict()
    for name, stored in original.items():
        if stored.shape[0] == old_vocab and name.endswith(("embed_tokens.weight", "lm_head.weight")):
            torch.testing.assert_close(state[name][:old_vocab], stored, rtol=0, atol=0)
            for row in state[name][old_vocab:]:
                torch.testing.assert_close(row, stored.double().mean(0).float(), rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(state[name], stored), name
    assert isinstance(pretrained.inspect(runs["init"]).model_class, type)


def test_loss_falls_and_resume_repeats_the_losses(runs):
    straight, resumed = _losses(runs["straight"]), _losses(runs["resumed"])
    assert sorted(straight) == list(range(1, STEPS + 1))
    first, last = sum(straight[s] for s in (1, 2)) / 2, sum(straight[s] for s in (STEPS - 1, STEPS)) / 2
    print(f"{runs['arch']}: loss {first:.3f} -> {last:.3f}")
    assert last < first - 0.3
    assert [resumed[s] for s in range(1, STEPS + 1)] == [straight[s] for s in range(1, STEPS + 1)]


def test_export_reloads_as_the_same_architecture_with_the_same_logits(runs):
    """The export against the final DCP checkpoint (converted by torch's own tool) in the trained class."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    from transformers import AutoConfig, AutoModelForCausalLM

    out = runs["straight"]
    exported = AutoModelForCausalLM.from_pretrained(out / "hf").eval()
    source_class = type(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(runs["init"])))
    assert type(exported) is source_class
    final = sorted((out / "checkpoints").glob("step-*"))[-1]
    dcp_to_torch_save(final, out / "final.pt")
    saved = torch.load(out / "final.pt", weights_only=False)["model"]
    reference = source_class(exported.config).eval()
    reference.load_state_dict(saved)
    ids = torch.randint(0, exported.config.vocab_size, (1, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=ids).logits, reference(input_ids=ids).logits, rtol=0, atol=0)
    # and it holds trained weights: every layer weight moved away from the init folder's (rows added for the
    # special tokens aside, the shapes match)
    init = AutoModelForCausalLM.from_pretrained(runs["init"]).state_dict()
    shared = [k for k in saved if k in init and "layers" in k and saved[k].shape == init[k].shape]
    assert shared and not any(torch.equal(saved[k], init[k]) for k in shared if k.endswith("proj.weight"))


def test_export_carries_the_chat_template_the_model_was_trained_on(runs):
    """A server applies the exported tokenizer's chat template: it must render what the trainer's chat format
    (`prompt_text`, BOS first as `ChatFormat.encode` puts it) renders, whatever template the init folder had."""
    from transformers import AutoTokenizer

    from cwm.data.chat import prompt_text

    tok = AutoTokenizer.from_pretrained(runs["straight"] / "hf")
    messages = [{"role": "system", "content": "You fix bugs."}, {"role": "user", "content": "test_add fails"},
                {"role": "assistant", "content": "<tool: submit>\n</tool>"}, {"role": "tool", "content": "ok"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == tok.bos_token + prompt_text(messages)


@pytest.fixture
def bad_folders(tmp_path, world):
    from transformers import BloomConfig, BloomForCausalLM

    empty = tmp_path / "empty"
    empty.mkdir()
    bloom = tmp_path / "bloom"
    BloomForCausalLM(BloomConfig(vocab_size=300, hidden_size=32, n_layer=1, n_head=2)).save_pretrained(bloom)
    _tokenizer(world["texts"]).save_pretrained(bloom)
    no_tok = save_pretrained_stand_in(tmp_path / "no-tokenizer", "llama", world["texts"])
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (no_tok / f).unlink()
    return {"not a model folder": empty, "does not run its attention through": bloom, "no tokenizer": no_tok}


def test_bad_init_folders_say_one_line_and_write_nothing(world, bad_folders, tmp_path, capsys):
    for phrase, folder in bad_folders.items():
        out = tmp_path / f"out-{folder.name}"
        assert _train(world, folder, out) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(folder) in err[0] and phrase in err[0], err
        assert not out.exists()
