"""Data plumbing shared by every stage: shards, tokenizer, mixing and packing."""
