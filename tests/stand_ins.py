"""Stand-ins shared by test folders (imported as `stand_ins`: tests/ is on sys.path through tests/conftest.py).
Imports only the standard library at module level; each stand-in imports what it needs."""


def null_sandbox():
    """A sandbox class whose every command succeeds with no output, for episodes that end before a tool runs."""
    from cwm.forager.sandbox import ExecResult, Sandbox, SandboxLimits

    class NullSandbox(Sandbox):
        isolation = "none"
        limits = SandboxLimits()

        def exec(self, command, timeout_s=120.0):
            return ExecResult("", 0, False, 0.0)

        def close(self):
            pass

    return NullSandbox


def save_tiny_llama(out, texts: list[str], max_positions: int = 512):
    """A random 2-layer Llama with a BPE tokenizer trained on `texts`, saved to `out` (what vLLM serves in the
    tests: head_dim 32, which vLLM's CPU attention takes; 16 it rejects)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from cwm.data.tokenizer import train_bpe

    tok = train_bpe(texts, 400, out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=max_positions,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def one_source_recipe(root, texts: list[str], *, seq_len: int = 128, window: int = 4):
    """A mid-training recipe with one jsonl source holding `texts` (root/data/a.jsonl), written to
    root/recipe.yaml; returns its path."""
    import json
    from pathlib import Path

    root = Path(root)
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    recipe = root / "recipe.yaml"
    recipe.write_text(f"seq_len: {seq_len}\npack_window_rows: {window}\nsources:\n"
                      f"  a: {{kind: jsonl, paths: [\"{root}/data/*.jsonl\"], weight: 1.0}}\n")
    return recipe
