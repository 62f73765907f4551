"""Building the model to train without any rank holding all of it: a pretrained Hugging Face folder or a preset.

The order is torchtitan's: build on the meta device (no memory), parallelise (FSDP2 shards the meta
parameters), `to_empty` (each rank allocates only its own shards), then fill each parameter's local shard —
from the folder's safetensors, read one parameter slice at a time (`safe_open(...).get_slice`, opened per
parameter so no more than one slice of the mapped file stays resident), or from a seeded initialisation
computed one parameter at a time. Either way the values do not depend on the number of ranks.

Mid-training continues a pretrained model with *its* tokenizer: `prepare_tokenizer` adds the toolkit's special
tokens (DESIGN.md §1, chat headers) where they are missing, each one token, and the vocabulary grows to hold
them. The new embedding and output rows start at the mean of the existing rows; existing rows are untouched.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


class PretrainedError(ValueError):
    """A `--model.init` folder that cannot be used; one line naming it and what to do."""


@dataclass
class Pretrained:
    folder: Path
    config: object           # the folder's transformers config, as read
    model_class: type        # its AutoModelForCausalLM class
    weight_files: dict       # parameter name -> safetensors file


def inspect(folder: str | Path) -> Pretrained:
    """Check that `folder` is a causal LM this trainer can continue, before anything is written."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(folder)
    what = f"--model.init {folder}"
    if not path.is_dir():
        raise PretrainedError(f"{what}: no such folder; pass a local Hugging Face model folder "
                              f"(config.json, *.safetensors, tokenizer files)")
    if not (path / "config.json").exists():
        raise PretrainedError(f"{what}: not a model folder (no config.json); pass a folder written by "
                              f"save_pretrained or downloaded from the Hugging Face Hub")
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise PretrainedError(f"{what}: config.json is not a transformers config ({str(e).splitlines()[0]})") from None
    try:
        model_class = AutoModelForCausalLM._model_mapping[type(config)]
    except KeyError:
        raise PretrainedError(f"{what}: {type(config).__name__} is not a causal language model; pass a "
                              f"Llama-, Qwen2/3-, Mistral- or Cwm-architecture model") from None
    if not getattr(model_class, "_supports_attention_backend", False):
        raise PretrainedError(f"{what}: {model_class.__name__} does not run its attention through transformers' "
                              f"attention interface, so packed documents cannot be kept apart; use a Llama-, "
                              f"Qwen2/3-, Mistral- or Cwm-architecture model")
    if not any((path / name).exists() for name in ("tokenizer_config.json", "tokenizer.json")):
        raise PretrainedError(f"{what}: no tokenizer (tokenizer_config.json / tokenizer.json); copy the model's "
                              f"tokenizer files into the folder (tokenizer.save_pretrained(FOLDER))")
    return Pretrained(path, config, model_class, _weight_files(path, what))


def _weight_files(path: Path, what: str) -> dict:
    from safetensors import safe_open

    index = path / "model.safetensors.index.json"
    if index.exists():
        return {name: str(path / file) for name, file in json.loads(index.read_text())["weight_map"].items()}
    single = path / "model.safetensors"
    if not single.exists():
        raise PretrainedError(f"{what}: no safetensors weights (model.safetensors or its index); re-save the "
                              f"model with save_pretrained (safetensors is the default)")
    with safe_open(str(single), "pt") as f:
        return {name: str(single) for name in f.keys()}


def prepare_tokenizer(source: Pretrained, out_dir: Path):
    """The folder's tokenizer with every toolkit special token added (each one token), saved to `out_dir`."""
    from cwm.data.tokenizer import adopt, load_tokenizer

    adopt(source.folder, out_dir)
    return load_tokenizer(out_dir)  # checks that each special token is one token


def fit_config(source: Pretrained, tokenizer, *, seq_len: int, rope_theta: float | None = None,
               rope_scaling: str | None = None):
    """The folder's config with room for the added tokens and, if asked, extended positions."""
    import copy

    config = copy.deepcopy(source.config)
    config.vocab_size = max(config.vocab_size, len(tokenizer))
    config.max_position_embeddings = max(getattr(config, "max_position_embeddings", 0) or 0, seq_len)
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id
    if rope_theta is not None or rope_scaling:
        params = dict(getattr(config, "rope_parameters", None) or {"rope_type": "default"})
        if rope_theta is not None:
            params["rope_theta"] = float(rope_theta)
        if rope_scaling:
            try:
                extra = json.loads(rope_scaling) if isinstance(rope_scaling, str) else rope_scaling
            except json.JSONDecodeError:
                extra = None
            if not isinstance(extra, dict):
                raise PretrainedError(f"--model.rope_scaling {rope_scaling!r}: not a JSON object; pass e.g. "
                                      f"'{{\"rope_type\": \"yarn\", \"factor\": 4.0}}'")
            params.update(extra)
        config.rope_parameters = params
    return config


# -- filling the (sharded) parameters ------------------------------------------------------------------------
def _local(param: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The tensor this rank holds of `param`, and the first global row it holds (FSDP2 shards dim 0)."""
    from torch.distributed.tensor import DTensor

    if isinstance(param, DTensor):
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        _, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
        return param.to_local(), int(offset[0]) if offset else 0
    return param.data, 0


@torch.no_grad()
def load_weights(model: nn.Module, source: Pretrained, progress=None) -> None:
    """Fill every parameter's local shard from the folder's safetensors; rows past the stored vocabulary (the
    added special tokens) get the mean of the stored rows."""
    from safetensors import safe_open

    missing = [name for name, _ in model.named_parameters() if name not in source.weight_files]
    if missing:
        raise PretrainedError(f"--model.init {source.folder}: the weights lack {', '.join(missing[:3])}"
                              f"{' …' if len(missing) > 3 else ''}; the folder does not match its config.json")
    for name, param in model.named_parameters():
        local, row0 = _local(param)
        if local.numel() == 0:
            continue
        with safe_open(source.weight_files[name], "pt") as f:  # opened per parameter: see the module docstring
            stored = f.get_slice(name)
            stored_rows = stored.get_shape()[0] if stored.get_shape() else 0
            if not stored.get_shape():
                local.copy_(f.get_tensor(name))
                continue
            if list(stored.get_shape()[1:]) != list(param.shape[1:]) or stored_rows > param.shape[0]:
                raise PretrainedError(f"--model.init {source.folder}: {name} is stored as {stored.get_shape()}, "
                                      f"the model expects {list(param.shape)}")
            end = min(row0 + local.shape[0], stored_rows)
            if end > row0:
                local[:end - row0].copy_(stored[row0:end])
            if row0 + local.shape[0] > stored_rows:  # rows of added tokens: the mean of the stored rows
                local[max(0, stored_rows - row0):].copy_(_row_mean(stored, stored_rows).to(local.dtype))
        if progress:
            progress(name)


def _row_mean(stored, rows: int, block: int = 4096) -> torch.Tensor:
    total = None
    for start in range(0, rows, block):
        part = stored[start:min(rows, start + block)].double().sum(0)
        total = part if total is None else total + part
    return total / rows


def _seed_of(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


@torch.no_grad()
def init_weights(model: nn.Module, config, seed: int) -> None:
    """From-scratch initialisation (transformers' rule: matrices normal(0, initializer_range), the padding
    row of the embedding zero, norm weights one, biases zero), one parameter at a time, each from its own
    seeded generator: the same values on any number of ranks."""
    std = getattr(config, "initializer_range", 0.02)
    pad = getattr(config, "pad_token_id", None)
    for name, param in model.named_parameters():
        local, row0 = _local(param)
        if param.dim() >= 2:
            full = torch.empty(param.shape, dtype=torch.float32).normal_(
                0.0, std, generator=torch.Generator().manual_seed(_seed_of(seed, name)))
            if name.endswith("embed_tokens.weight") and pad is not None and 0 <= pad < param.shape[0]:
                full[pad] = 0
            local.copy_(full[row0:row0 + local.shape[0]])
        else:
            local.fill_(0.0 if name.endswith("bias") else 1.0)


@torch.no_grad()
def reset_buffers(model: nn.Module, device: torch.device) -> None:
    """Recompute the non-persistent buffers `to_empty` left uninitialised (the rotary inverse frequencies)."""
    for module in model.modules():
        if hasattr(module, "inv_freq") and hasattr(module, "config"):
            fresh = type(module)(module.config)
            for buffer in ("inv_freq", "original_inv_freq"):
                if hasattr(module, buffer):
                    getattr(module, buffer).copy_(getattr(fresh, buffer).to(device))
            if hasattr(fresh, "attention_scaling"):
                module.attention_scaling = fresh.attention_scaling
    leftover = [n for n, b in model.named_buffers() if b.is_meta]
    if leftover:
        raise RuntimeError(f"buffers still on the meta device after building: {leftover[:3]}")
