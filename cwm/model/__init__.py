"""The model: `transformers`' CwmForCausalLM, its size presets and the packed attention registration."""
