"""Goal alignment after mid-training: GRPO (CWM's variant) on verifiable code tasks with sparse ±1 rewards.

- `env.py`: the environment interface (reset → messages; step(reply) → messages, reward, done); `envs/`:
  output prediction (trace shards), code generation (jailed hidden tests), software engineering (forager, Docker).
- `rollout.py`: one token-level rollout loop for single- and multi-turn environments, policy tokens masked in.
- `generate.py`: samplers — an in-process copy with a KV cache, or an OpenAI-compatible server + weight push.
- `producer.py`: rollouts overlapping learning, staleness bounded.
- `grpo.py`, `learner.py`: the loss and one learner step; `train.py`: `torchrun cwm/rl/train.py --recipe R`.
"""
