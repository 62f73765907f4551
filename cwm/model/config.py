"""Model shapes: `transformers`' CwmConfig from a named preset or a config file, fitted to the tokenizer.

Every preset keeps CWM's architecture (SwiGLU, GQA, RoPE θ 1e6, three sliding-window layers per global one,
DESIGN.md §7) and only scales it; `cwm-32b` is the published shape.
"""
from __future__ import annotations

import json
from pathlib import Path

PRESETS: dict[str, dict] = {
    # For tests and `make demo`: trains on a laptop CPU in minutes.
    # θ 1e4, not CWM's 1e6: with 32-dim heads and short rows, θ 1e6 leaves almost no positional signal.
    # head_dim 32: the smallest head vLLM's CPU attention serves.
    "tiny": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=32, sliding_window=64, rope_theta=10_000.0),
    "125m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                 num_key_value_heads=4, head_dim=64, sliding_window=1024),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, head_dim=64, sliding_window=4096),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, sliding_window=8192, vocab_size=128256),
    "cwm-32b": dict(hidden_size=6144, intermediate_size=21504, num_hidden_layers=64, num_attention_heads=48,
                    num_key_value_heads=8, head_dim=128, sliding_window=8192, vocab_size=128256,
                    max_position_embeddings=131072),
}


def build_config(tokenizer, *, preset: str = "tiny", config_file: str | None = None, seq_len: int = 2048):
    """A CwmConfig whose vocabulary holds every token of `tokenizer` and whose positions cover `seq_len`."""
    from transformers import CwmConfig

    def fitted(vocab: int, positions: int, rope_theta: float = 1_000_000.0) -> dict:
        fit = dict(vocab_size=max(vocab, _round_up(len(tokenizer), 64)), max_position_embeddings=max(positions, seq_len),
                   bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
        if fit["max_position_embeddings"] <= 8192:
            # CWM's llama3 RoPE scaling extends an 8k original context; within 8k it is plain RoPE with θ 1e6.
            fit["rope_parameters"] = {"rope_type": "default", "rope_theta": rope_theta}
        return fit

    if config_file:
        # A file gives the shape; what it leaves out is fitted here, not taken from CwmConfig's 32B defaults.
        path = Path(config_file)
        given = json.loads((path / "config.json" if path.is_dir() else path).read_text())
        shape = {k: v for k, v in given.items() if k in CwmConfig.__dataclass_fields__ and k not in ("model_type", "architectures")}
        fit = fitted(shape.pop("vocab_size", 0), shape.pop("max_position_embeddings", 0))
        return CwmConfig(**{**shape, **fit})
    if preset not in PRESETS:
        raise ValueError(f"model preset '{preset}' unknown; use one of {', '.join(PRESETS)} or --model.config FILE")
    shape = dict(PRESETS[preset])
    fit = fitted(shape.pop("vocab_size", 0), shape.pop("max_position_embeddings", 0), shape.pop("rope_theta", 1e6))
    return CwmConfig(**shape, **fit)


def _round_up(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


def matmul_parameters(model, config) -> int:
    """Parameters that multiply activations: every matrix but the input embedding, plus the output projection
    (counted once more when it shares the embedding's matrix). Works on meta or sharded models (global shapes)."""
    total = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in n)
    if getattr(config, "tie_word_embeddings", False):
        total += config.vocab_size * config.hidden_size
    return total


def _window_pairs(n: int, window: int | None) -> int:
    """(query, key) pairs a causal layer computes over one document of n tokens: sum over i of min(i + 1, window)."""
    if window is None or window >= n:
        return n * (n + 1) // 2
    return window * (window + 1) // 2 + (n - window) * window


def layer_windows(config) -> list[int | None]:
    """Each layer's attention span: its sliding window, or None for full attention."""
    layers = config.num_hidden_layers
    types = getattr(config, "layer_types", None) or ["full_attention"] * layers
    window = getattr(config, "sliding_window", None)
    return [window if t == "sliding_attention" and window else None for t in types]


def flops_per_row(config, matmul_params: int, doc_lengths: list[int]) -> float:
    """Training FLOPs (forward + backward) of a packed row, counted per document.

    6 × matmul parameters per real token, plus attention over each document's own length and each layer's
    window: 12 × query heads × head dim FLOPs per (query, key) pair the packed kernel computes (QK and PV,
    2 FLOPs a multiply-add, × 3 for forward + backward). Padding counts nothing.
    """
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    pairs = sum(_window_pairs(n, w) for w in layer_windows(config) for n in doc_lengths)
    return 6.0 * matmul_params * sum(doc_lengths) + 12.0 * heads * head_dim * pairs
