"""RL environments: output prediction, code generation, software engineering (see cwm/rl/env.py)."""
