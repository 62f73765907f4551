"""One rollout loop for every environment: chat-format the observations, sample a turn, step, repeat.

Rollouts live in token space: the trajectory is the exact token sequence the policy saw and produced, with a mask
that is 1 only on tokens the policy sampled (never on the prompt, tool observations or the chat scaffolding
between turns), and the behaviour policy's log-prob of each sampled token.
"""
from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cwm.data.special_tokens import EOT
from cwm.data.documents import chat_prompt_segments, prompt_ids
from cwm.rl.env import FAIL, Env, EnvFactory, Message
from cwm.rl.generate import Generator, Sample, SamplingConfig


@dataclass
class RolloutConfig:
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    max_turns: int = 1          # CWM's SWE episodes: 128
    max_len: int = 2048         # prompt + every turn + every observation, in tokens
    env_workers: int = 8        # environments stepped in parallel (sandboxes and containers wait on I/O)


@dataclass
class Trajectory:
    env: str
    task: int
    group: int
    tokens: list[int]
    mask: list[int]
    logprobs: list[float]
    version: int
    reward: float = FAIL
    passed: bool = False
    turns: int = 0
    info: dict = field(default_factory=dict)

    @property
    def response_tokens(self) -> int:
        return sum(self.mask)


class ChatFormat:
    """Llama-3 style chat turns rendered by `cwm.data.chat.prompt_text`: the layout mid-training saw trajectories in."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eot_id = tokenizer.convert_tokens_to_ids(EOT)
        self.stop_ids = [self.eot_id] + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])

    def encode(self, messages: list[Message], *, first: bool, close_turn: bool = False) -> list[int]:
        """Token ids of `messages` followed by the header of the next assistant turn.

        first: prepend BOS (the start of the document). close_turn: the previous assistant turn was cut at the
        token limit, so end it before the next message.

        Encoded as mid-training encodes trajectories (`cwm.data.documents`): the chat scaffolding is special
        tokens, every message's content ordinary text, so a tool observation that prints `<|eot_id|>` cannot
        end a turn or forge one."""
        segments = ([(EOT, True)] if close_turn else []) + chat_prompt_segments(messages)
        return prompt_ids(self.tokenizer, segments, bos=first)

    def reply_text(self, sample: Sample) -> str:
        tokens = sample.tokens[:-1] if sample.stopped else sample.tokens
        return self.tokenizer.decode(tokens, skip_special_tokens=False)


def rollout(envs: list[Env], generator: Generator, chat: ChatFormat, cfg: RolloutConfig,
            labels: list[tuple[int, int]] | None = None) -> list[Trajectory]:
    """Run every environment to the end of its episode, sampling all live episodes' turns in one batch.

    labels: (task index, group id) per environment, copied into the trajectories. Environments are closed here.
    """
    labels = labels or [(0, i) for i in range(len(envs))]
    try:
        with ThreadPoolExecutor(max_workers=max(1, cfg.env_workers)) as pool:
            first = list(pool.map(lambda e: e.reset(), envs))
            trajs = []
            for env, msgs, (task, group) in zip(envs, first, labels):
                ids = chat.encode(msgs, first=True)
                trajs.append(Trajectory(env=env.name, task=task, group=group, tokens=ids, mask=[0] * len(ids),
                                        logprobs=[0.0] * len(ids), version=generator.version))
            live = [i for i, t in enumerate(trajs) if _fits(t, cfg)]
            for i in set(range(len(trajs))) - set(live):
                trajs[i].info["outcome"] = "prompt_too_long"  # never sampled: not the policy's doing
            for _ in range(cfg.max_turns):
                if not live:
                    break
                version = generator.version
                samples = generator.generate([trajs[i].tokens for i in live], cfg.sampling)
                for i, s in zip(live, samples):
                    t = trajs[i]
                    t.tokens += s.tokens
                    t.mask += [1] * len(s.tokens)
                    t.logprobs += s.logprobs
                    t.version = min(t.version, version)
                    t.turns += 1
                results = list(pool.map(lambda i_s: envs[i_s[0]].step(chat.reply_text(i_s[1])),
                                        zip(live, samples)))
                still = []
                for i, s, result in zip(live, samples, results):
                    t = trajs[i]
                    t.info.update(result.info)
                    if result.done:
                        t.reward, t.passed = result.reward, bool(result.info.get("passed", result.reward > 0))
                        t.info.setdefault("outcome", "done")
                        continue
                    obs = chat.encode(result.observation, first=False, close_turn=not s.stopped)
                    t.tokens += obs
                    t.mask += [0] * len(obs)
                    t.logprobs += [0.0] * len(obs)
                    if _fits(t, cfg):
                        still.append(i)
                    else:
                        t.info["outcome"] = "token_limit"
                live = still
            for i in live:
                trajs[i].info["outcome"] = "turn_limit"
    finally:
        for env in envs:
            env.close()
    return trajs


def _fits(t: Trajectory, cfg: RolloutConfig) -> bool:
    return len(t.tokens) + cfg.sampling.max_new_tokens <= cfg.max_len


class TaskSampler:
    """Draws (environment family, task index) pairs: families by weight, tasks in a shuffled cycle per family."""

    def __init__(self, factories: list[EnvFactory], weights: list[float] | None = None, seed: int = 0):
        self.factories = factories
        self.weights = weights or [1.0] * len(factories)
        self.rng = random.Random(seed)
        self._orders = [self._order(f) for f in factories]

    def _order(self, factory: EnvFactory) -> list[int]:
        order = list(range(len(factory)))
        self.rng.shuffle(order)
        return order

    def draw(self) -> tuple[EnvFactory, int]:
        k = self.rng.choices(range(len(self.factories)), weights=self.weights)[0]
        if not self._orders[k]:
            self._orders[k] = self._order(self.factories[k])
        return self.factories[k], self._orders[k].pop()

    def state_dict(self) -> dict:
        """JSON-able position (the checkpoint's `loader` state): a resumed run draws the same tasks next."""
        version, internal, gauss = self.rng.getstate()
        return {"rng": [version, list(internal), gauss], "orders": self._orders}

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self._orders = [list(o) for o in state["orders"]]


def rollout_groups(sampler: TaskSampler, n_groups: int, group_size: int, generator: Generator, chat: ChatFormat,
                   cfg: RolloutConfig, first_group_id: int = 0) -> list[Trajectory]:
    """`n_groups` GRPO groups: each is `group_size` episodes of one task, all sampled in one batch."""
    envs, labels = [], []
    for g in range(n_groups):
        factory, index = sampler.draw()
        for _ in range(group_size):
            envs.append(factory.make(index))
            labels.append((index, first_group_id + g))
    return rollout(envs, generator, chat, cfg, labels)
