"""`python cwm/train.py --recipe R --plan [overrides]`: the memory a run needs per device, before any data exists.

The model is built on the meta device (no memory, no weights, no data) to count its parameters exactly; the
rest is arithmetic over the config (cwm.model.config shapes), the recipe's row length and the parallelism:

* parameters, gradients (fp32, sharded over the FSDP ranks) and AdamW's two moments;
* gathered parameters: FSDP2 all-gathers one decoder layer at a time (plus the next, prefetched) and keeps
  the root's (embeddings, head) gathered, in the compute dtype;
* activations of one row: per layer and token, what autograd saves in a Llama-style decoder layer (below),
  or with activation checkpointing each layer's input plus one layer's activations being recomputed;
* the loss (cwm/model/loss.py): one `[chunk, V]` fp32 block of logits, the hidden states' gradient and the
  fp32 output-projection gradient formed in forward.

What a layer saves per token (elements; d hidden, q/kv query/KV heads, h head dim, f FFN width), counted from
transformers' eager code: two RMSNorms × (input, normalised output) = 4d; the attention block's q, k, v after
RoPE and in the kernel's layout, its output and the o_proj input = 3qh + 4kvh; the SwiGLU's gate, up, silu(gate)
and their product = 4f (on CPU, SDPA also repeats K and V to the query heads, + 2qh, and keeps each
document's softmax, heads × n² per document of n tokens: planned at n = the row length). Backward holds
one layer's worth of gradients on top. Estimates are checked against measured peak memory in tests/train/test_plan.py.
"""
from __future__ import annotations

from dataclasses import dataclass

GB = 2**30


@dataclass
class Plan:
    devices: int
    params: float
    grads: float
    optimizer: float
    gathered: float
    activations: float
    activations_checkpointed: float
    loss: float
    checkpointing: bool

    @property
    def total(self) -> float:
        acts = self.activations_checkpointed if self.checkpointing else self.activations
        return self.params + self.grads + self.optimizer + self.gathered + acts + self.loss


def layer_elements_per_token(config, *, expand_kv: bool = False) -> int:
    d, f = config.hidden_size, config.intermediate_size
    q, kv = config.num_attention_heads, config.num_key_value_heads
    h = getattr(config, "head_dim", None) or d // q
    expanded = 2 * q * h if expand_kv and kv < q else 0  # CPU SDPA repeats K and V to the query heads (GQA)
    return 4 * d + 3 * q * h + 4 * kv * h + 4 * f + expanded


def estimate(model, config, *, devices: int, seq_len: int, rows_per_device: int = 1, bf16: bool,
             checkpointing: bool, loss_chunk: int, cpu: bool = False, cp: int = 1) -> Plan:
    """Bytes per device for training `model` (built on the meta device) on rows of `seq_len` tokens, each row
    split over `cp` devices (context parallelism, cwm/model/context_parallel.py; planned at the mean share)."""
    from cwm.model.config import layer_windows

    n = sum(p.numel() for p in model.parameters())
    sharded = devices > 1
    act_bytes = 2 if bf16 else 4
    layers = config.num_hidden_layers
    share = -(-seq_len // cp)  # a device's tokens of each row
    tokens = share * rows_per_device
    per_layer = layer_elements_per_token(config, expand_kv=cpu) * tokens * act_bytes
    if cpu:
        # CPU SDPA (math path, GQA) keeps each document's [heads, n, n] softmax (saved once: the product with V
        # uses the same tensor): quadratic in the document's length. Planned for the worst case, one document
        # filling the row (the padding document of a short row counts too). The GPU kernel keeps O(n).
        per_layer += config.num_attention_heads * share * seq_len * rows_per_device * act_bytes
    # A layer's attention backward on CPU holds the softmax's and the scores' gradients at once: one more n².
    attention_workspace = config.num_attention_heads * share * seq_len * rows_per_device * act_bytes if cpu else 0
    # Context parallelism: K/V rows borrowed from other devices are kept for backward (the received rows and the
    # keys/values attention saves), worst case the last share of one document filling the row: seq_len - share
    # rows on a full layer, window - 1 on a sliding one. Without checkpointing every layer's, with it one layer's.
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_row = 2 * 2 * config.num_key_value_heads * head_dim * act_bytes * rows_per_device
    borrowed = [0 if cp == 1 else min(seq_len - share, seq_len if w is None else w - 1) * kv_row
                for w in layer_windows(config)]
    d, vocab = config.hidden_size, config.vocab_size
    embed_and_norm = 3 * d * tokens * act_bytes  # the embedding output, the final norm's input and output
    layer_params = sum(p.numel() for p in model.model.layers[0].parameters())
    root_params = n - layers * layer_params
    gathered = (2 * layer_params + root_params) * act_bytes if sharded else (n * 2 if bf16 else 0)
    return Plan(
        devices=devices,
        params=4 * n / devices, grads=4 * n / devices, optimizer=8 * n / devices, gathered=gathered,
        # Backward of a layer holds gradients as large as what the layer saved: one layer's worth on top.
        activations=(layers + 1) * per_layer + attention_workspace + embed_and_norm + sum(borrowed),
        # With checkpointing: each layer's input, plus one layer recomputed and its backward.
        activations_checkpointed=(layers * d * tokens * act_bytes + 2 * per_layer + attention_workspace
                                  + embed_and_norm + max(borrowed)),
        loss=4 * min(loss_chunk, tokens) * vocab + act_bytes * d * tokens + 4 * vocab * d,
        checkpointing=checkpointing)


def build_meta(cfg):
    """The run's config and model on the meta device, with no data read (a missing tokenizer is allowed)."""
    import torch

    from cwm.data.recipe import load_recipe

    recipe = load_recipe(cfg.recipe, check_files=False)
    if cfg.model.init:
        from cwm.data.special_tokens import ALL_SPECIAL_TOKENS
        from cwm.model import pretrained

        source = pretrained.inspect(cfg.model.init)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(source.folder), local_files_only=True)
        added = sum(t not in tok.get_vocab() for t in ALL_SPECIAL_TOKENS)
        config = pretrained.fit_config(source, _Sized(len(tok) + added, tok.pad_token_id), seq_len=recipe.seq_len,
                                       rope_theta=cfg.model.rope_theta, rope_scaling=cfg.model.rope_scaling)
        model_class = source.model_class
    else:
        from transformers import CwmForCausalLM

        from cwm.model.config import PRESETS, build_config

        tokenizer = _tokenizer_or_stand_in(recipe, PRESETS.get(cfg.model.preset, {}).get("vocab_size", 128_256))
        config = build_config(tokenizer, preset=cfg.model.preset, config_file=cfg.model.config, seq_len=recipe.seq_len)
        model_class = CwmForCausalLM
    with torch.device("meta"):
        model = model_class._from_config(config)
    return recipe, config, model


class _Sized:
    """Enough of a tokenizer for the config fitting: a length and the special ids."""

    def __init__(self, n: int, pad: int | None = 2):
        # Placeholder special ids (the config validates them as ints); memory does not depend on them.
        self.n, self.pad_token_id, self.bos_token_id, self.eos_token_id = n, pad, 0, 1

    def __len__(self) -> int:
        return self.n


def _tokenizer_or_stand_in(recipe, vocab: int):
    from pathlib import Path

    if recipe.tokenizer and Path(recipe.tokenizer, "tokenizer_config.json").exists():
        from cwm.data.tokenizer import load_tokenizer

        return load_tokenizer(recipe.tokenizer)
    return _Sized(vocab)


def print_plan(cfg) -> Plan:
    """The `--plan` report for a parsed JobConfig; returns the Plan."""
    import os

    recipe, config, model = build_meta(cfg)
    devices = cfg.plan.devices or int(os.environ.get("WORLD_SIZE", "1"))
    on_gpu = cfg.training.device == "cuda" or (cfg.training.device == "auto" and _cuda())
    bf16 = cfg.training.bf16 == "on" or (cfg.training.bf16 == "auto" and on_gpu)
    ac = cfg.training.activation_checkpointing == "on" or (cfg.training.activation_checkpointing == "auto" and on_gpu)
    cp = cfg.parallel.cp
    plan = estimate(model, config, devices=devices, seq_len=recipe.seq_len, bf16=bf16, checkpointing=ac,
                    loss_chunk=cfg.training.loss_chunk, cpu=not on_gpu, cp=cp)
    n = sum(p.numel() for p in model.parameters())
    name = cfg.model.init or cfg.model.config or cfg.model.preset
    without = plan.total - (plan.activations_checkpointed if ac else plan.activations) + plan.activations
    with_ac = plan.total - (plan.activations_checkpointed if ac else plan.activations) + plan.activations_checkpointed
    full_logits = 3 * 4 * recipe.seq_len * config.vocab_size
    lines = [
        f"plan: {name} ({type(model).__name__}, {n / 1e9:.3f}B parameters, vocabulary {config.vocab_size}), "
        f"rows of {recipe.seq_len} tokens, {devices} device(s), {'bf16' if bf16 else 'fp32'} compute"
        + (f", context parallel {cp} ({-(-recipe.seq_len // cp)} tokens of a row per device)" if cp > 1 else ""),
        f"  parameters (fp32, sharded)      {plan.params / GB:9.2f} GB",
        f"  gradients (fp32, sharded)       {plan.grads / GB:9.2f} GB",
        f"  optimizer (AdamW, 2 moments)    {plan.optimizer / GB:9.2f} GB",
        f"  gathered parameters (FSDP)      {plan.gathered / GB:9.2f} GB",
        f"  activations                     {plan.activations / GB:9.2f} GB without checkpointing, "
        f"{plan.activations_checkpointed / GB:.2f} GB with",
        f"  loss (chunk {cfg.training.loss_chunk} tokens)          {plan.loss / GB:9.2f} GB "
        f"(full [T, V] logits would take {full_logits / GB:.2f} GB)",
        f"  total per device                {without / GB:9.2f} GB without checkpointing, {with_ac / GB:.2f} GB with"
        f"{' (checkpointing on)' if ac else ' (checkpointing off)'}",
        "  by context parallelism (--parallel.cp; devices rounded up to a multiple of it):",
    ]
    for c in (1, 2, 4, 8):
        n_dev = -(-devices // c) * c
        kw = dict(devices=n_dev, seq_len=recipe.seq_len, bf16=bf16, loss_chunk=cfg.training.loss_chunk,
                  cpu=not on_gpu, cp=c)
        lines.append(f"    CP {c} on {n_dev:4d} devices        {estimate(model, config, checkpointing=False, **kw).total / GB:9.2f}"
                     f" GB without checkpointing, {estimate(model, config, checkpointing=True, **kw).total / GB:.2f} GB with")
    fits = plan.total <= cfg.plan.device_gb * GB
    verdict = (f"fits in {cfg.plan.device_gb:g} GB per device" if fits else
               f"does NOT fit in {cfg.plan.device_gb:g} GB per device: need {plan.total / GB:.1f} GB; "
               + ("turn on activation checkpointing (--training.activation_checkpointing on), "
                  if not ac and with_ac <= cfg.plan.device_gb * GB else "")
               + _more_devices_or_split(plan, model, config, recipe, cfg, bf16, ac, not on_gpu))
    lines.append(f"  -> {verdict}")
    print("\n".join(lines))
    return plan


def _more_devices_or_split(plan: Plan, model, config, recipe, cfg, bf16, ac, cpu) -> str:
    """More FSDP devices shrink only the sharded states; one row's activations stay on one device."""
    row = (plan.activations_checkpointed if ac else plan.activations) + plan.loss + plan.gathered
    if row > cfg.plan.device_gb * GB:
        for cp in (2**i for i in range(1, 8)):
            if estimate(model, config, devices=-(-plan.devices // cp) * cp, seq_len=recipe.seq_len, bf16=bf16,
                        checkpointing=ac, loss_chunk=cfg.training.loss_chunk, cpu=cpu, cp=cp).total <= cfg.plan.device_gb * GB:
                return (f"one row's activations, loss and gathered layers alone take {row / GB:.1f} GB, which more "
                        f"FSDP devices do not shrink: split each row over {cp} devices (--parallel.cp {cp})")
        return (f"one row's activations, loss and gathered layers alone take {row / GB:.1f} GB, which more FSDP "
                f"devices do not shrink: split the row over devices (context parallelism) or use a shorter seq_len")
    for devices in (2**i for i in range(0, 16)):
        if estimate(model, config, devices=devices, seq_len=recipe.seq_len, bf16=bf16, checkpointing=ac,
                    loss_chunk=cfg.training.loss_chunk, cpu=cpu).total <= cfg.plan.device_gb * GB:
            return f"use at least {devices} devices (--plan.devices {devices})"
    return "use a shorter seq_len"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


__all__ = ["Plan", "estimate", "print_plan", "layer_elements_per_token"]
