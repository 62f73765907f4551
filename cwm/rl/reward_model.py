"""A learned reward model for partial progress: a scorer trained on episodes labelled by their outcome and by
partial signals the toolkit computes, used as a dense shaping term next to the sparse ±1 reward, and to rerank
best-of-n candidates (`cwm.rl.search.rerank`) without running their tests.

    python -m cwm.rl.reward_model train --trajectories SHARDS --init DIR -o OUT     # held-out AUC vs baselines
    python -m cwm.rl.reward_model score --model OUT --trajectories SHARDS            # one score per episode

Examples come from shards (`cwm.data.shards`) of two record kinds:
- `cwm.trajectory/1` (ForagerAgent, DESIGN §4): the conversation; outcome = reward > 0; partial signals: the
  fraction of tests passing in the last test summary an observation showed, and whether the episode submitted
  a non-empty patch.
- `cwm.codegen_sample/1`: `{"schema", "id", "task": {"id", "prompt", "entry", "tests"}, "reply"}`, a sampled
  answer to a code-generation task (cwm/rl/envs/codegen.py); outcome and signals are computed here: the imports
  resolve, the signature is honoured (a function `entry` taking as many arguments as the tests pass), and the
  fraction of the hidden tests it passes (each run in the jail, `cwm.rl.search.pass_matrix`).

Target: 1 for a passing episode, else PARTIAL_CAP × (mean of its partial signals), below PARTIAL_CAP < 1: the
model learns to rank partial progress among failures without ever being taught a failure looks like a success.

Model: the `--init` causal LM (e.g. the mid-trained policy) with a linear head on the last token's final hidden
state, trained with binary cross-entropy against the target; `score` is the sigmoid, in (0, 1).

Shaping (`shaped_reward`): reward + weight × (score − 0.5) with 0 <= weight < 2. Invariant: a solved episode
(+1) always outranks an unsolved one (−1) whatever the scores, because the term moves a reward by less than 1.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

PARTIAL_CAP = 0.5
SAMPLE_SCHEMA = "cwm.codegen_sample/1"
TRAJECTORY_SCHEMA = "cwm.trajectory/1"
@dataclass
class RewardModelTerm:
    """The recipe's `reward_model:` section: a dense shaping term from a trained reward model (off by default)."""
    path: str | None = None          # a folder written by `python -m cwm.rl.reward_model train`
    weight: float = 0.0              # 0 <= weight < 2; 0: off

    def validate(self) -> None:
        if not 0.0 <= self.weight < 2.0:
            raise ValueError(f"reward_model.weight {self.weight}: need 0 <= weight < 2 (at 2 or more the shaping "
                             "term could rank a failed episode above a solved one)")
        if self.weight > 0 and not self.path:
            raise ValueError("reward_model.weight > 0 needs reward_model.path (python -m cwm.rl.reward_model train)")


@dataclass
class Example:
    text: str
    passed: bool
    partial: float        # mean of the partial signals, in [0, 1]
    turns: int
    id: str = ""
    segments: list | None = None  # (text, is_structure) pieces of `text`; None: all of it is content

    @property
    def model_input(self):
        """What the reward model reads (`RewardModel.score_texts`)."""
        return self.segments if self.segments is not None else self.text

    @property
    def target(self) -> float:
        return 1.0 if self.passed else PARTIAL_CAP * self.partial


def shaped_reward(reward: float, score: float, weight: float) -> float:
    """The sparse reward plus the reward model's dense term; never flips solved vs unsolved (weight < 2)."""
    return reward + weight * (min(max(score, 0.0), 1.0) - 0.5)


def load_term(term: RewardModelTerm, device=None) -> "RewardModel | None":
    """The recipe's reward model, or None when the term is off."""
    term.validate()
    if term.weight <= 0:
        return None
    return load_model(term.path, device)


def load_model(path: str, device=None) -> "RewardModel":
    rm = RewardModel.load(path)
    if device is not None:
        rm.backbone.to(device)
        rm.head.to(device)
    return rm


def shape_trajectories(rm: "RewardModel | None", trajs: list, tokenizer, weight: float) -> tuple[list, dict]:
    """Copies of the RL trajectories with the dense term added to their reward (the learner's input; the
    originals keep the sparse reward for the logged metrics), and the step's reward-model metrics: mean score of
    passed and failed episodes and their AUC (score vs outcome)."""
    import dataclasses

    if rm is None or not trajs:
        return trajs, {}
    from cwm.data.documents import segments_from_ids

    scores = rm.score_texts([segments_from_ids(tokenizer, t.tokens) for t in trajs])
    shaped = [dataclasses.replace(t, reward=shaped_reward(t.reward, s, weight)) for t, s in zip(trajs, scores)]
    passed = [s for s, t in zip(scores, trajs) if t.passed]
    failed = [s for s, t in zip(scores, trajs) if not t.passed]
    metrics = {"reward_model/score_passed": sum(passed) / len(passed) if passed else None,
               "reward_model/score_failed": sum(failed) / len(failed) if failed else None,
               "reward_model/auc": auc(scores, [t.passed for t in trajs]) if passed and failed else None}
    return shaped, metrics


# -- partial signals --------------------------------------------------------------------------------------------

def codegen_signals(reply: str, entry: str, tests: Sequence[str]) -> dict[str, float]:
    """imports_resolve, signature, tests_passed (fractions in [0, 1]) of a code-generation answer."""
    from cwm.rl.search import extract_code, pass_matrix

    code = extract_code(reply)
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return {"imports_resolve": 0.0, "signature": 0.0, "tests_passed": 0.0}
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                and not n.level}
    imports = all(importlib.util.find_spec(m) is not None for m in modules) if modules else True
    arity = _test_arity(tests, entry)
    fns = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == entry]
    signature = bool(fns) and (arity is None or _accepts(fns[0].args, arity))
    passed = pass_matrix([code], list(tests))[0] if tests else []
    return {"imports_resolve": float(imports), "signature": float(signature),
            "tests_passed": sum(passed) / len(passed) if passed else 0.0}


def _test_arity(tests: Sequence[str], entry: str) -> int | None:
    for t in tests:
        try:
            for node in ast.walk(ast.parse(t)):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry:
                    return len(node.args) + len(node.keywords)
        except SyntaxError:
            continue
    return None


def _accepts(args: ast.arguments, n: int) -> bool:
    positional = len(args.posonlyargs) + len(args.args)
    required = positional - len(args.defaults)
    return required <= n and (n <= positional or args.vararg is not None)


def trajectory_signals(record: dict) -> dict[str, float]:
    """tests_passed (the last test summary an observation showed; 0 if none: the tree search's value,
    `cwm.rl.search.value_from_tests_run`) and submitted_patch."""
    from cwm.rl.search import value_from_tests_run

    frac = value_from_tests_run(record.get("messages", []), {}) or 0.0
    submitted = record.get("outcome") == "submitted" and bool((record.get("patch") or "").strip())
    return {"tests_passed": frac, "submitted_patch": float(submitted)}


def example_from_record(record: dict) -> Example | None:
    from cwm.data.chat import prompt_text
    from cwm.data.documents import chat_prompt_segments

    schema = record.get("schema")
    if schema == TRAJECTORY_SCHEMA:
        signals = trajectory_signals(record)
        msgs = [{"role": m["role"], "content": m.get("content") or ""} for m in record["messages"]]
        return Example(prompt_text(msgs), record.get("reward", -1) > 0, sum(signals.values()) / len(signals),
                       sum(m["role"] == "assistant" for m in msgs), record.get("id", ""), chat_prompt_segments(msgs))
    if schema == SAMPLE_SCHEMA:
        task = record["task"]
        signals = codegen_signals(record["reply"], task["entry"], task["tests"])
        msgs = [{"role": "user", "content": task["prompt"]}, {"role": "assistant", "content": record["reply"]}]
        return Example(prompt_text(msgs), signals["tests_passed"] == 1.0 and signals["signature"] == 1.0,
                       sum(signals.values()) / len(signals), 1, record.get("id", ""), chat_prompt_segments(msgs))
    return None


def load_examples(sources: Sequence[str], progress=None) -> list[Example]:
    from cwm.data.shards import iter_records

    examples = []
    for record in iter_records(list(sources)):
        ex = example_from_record(record)
        if ex is not None:
            examples.append(ex)
            if progress:
                progress(len(examples))
    if not examples:
        raise ValueError(f"{', '.join(map(str, sources))}: no {TRAJECTORY_SCHEMA} or {SAMPLE_SCHEMA} records there")
    return examples


# -- the model --------------------------------------------------------------------------------------------------

def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: P(a random positive scores above a random negative), ties counted half."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


class RewardModel:
    """A causal LM backbone with a scalar head on the last token's final hidden state."""

    def __init__(self, backbone, tokenizer, head, max_len: int = 512):
        self.backbone, self.tokenizer, self.head, self.max_len = backbone, tokenizer, head, max_len

    @classmethod
    def from_init(cls, init: str, max_len: int = 512, seed: int = 0) -> "RewardModel":
        import torch
        from transformers import AutoModelForCausalLM

        from cwm.data.tokenizer import load_tokenizer

        if not Path(init, "config.json").exists():
            raise ValueError(f"--init {init}: not a Hugging Face model folder (no config.json); give the "
                             "mid-trained model's export, e.g. runs/demo/hf")
        torch.manual_seed(seed)
        backbone = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32, attn_implementation="sdpa")
        head = torch.nn.Linear(backbone.config.hidden_size, 1)
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        return cls(backbone, load_tokenizer(init), head, max_len)

    @classmethod
    def load(cls, path: str | Path) -> "RewardModel":
        import torch
        from transformers import AutoModelForCausalLM

        from cwm.data.tokenizer import load_tokenizer

        path = Path(path)
        meta_file = path / "reward_model.json"
        if not meta_file.exists():
            raise ValueError(f"{path}: not a reward model (no reward_model.json); train one with "
                             "`python -m cwm.rl.reward_model train`")
        meta = json.loads(meta_file.read_text())
        backbone = AutoModelForCausalLM.from_pretrained(path / "backbone", dtype=torch.float32,
                                                        attn_implementation="sdpa")
        head = torch.nn.Linear(backbone.config.hidden_size, 1)
        head.load_state_dict(torch.load(path / "head.pt", weights_only=True))
        return cls(backbone.eval(), load_tokenizer(path / "backbone"), head.eval(), meta["max_len"])

    def save(self, path: str | Path, meta: dict) -> Path:
        import torch

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(path / "backbone")
        self.tokenizer.save_pretrained(path / "backbone")
        torch.save(self.head.state_dict(), path / "head.pt")
        (path / "reward_model.json").write_text(json.dumps({"max_len": self.max_len, **meta}, indent=1))
        return path

    def _encode(self, texts: Sequence):
        """Each item a text (all content: a code candidate) or (text, is_structure) segments (a conversation:
        chat scaffolding special, messages content), encoded as `cwm.data.documents.prompt_ids` does, so no
        text in an episode (a tool's output, the policy's reply) can become a special token."""
        import torch

        from cwm.data.documents import prompt_ids

        rows = [prompt_ids(self.tokenizer, t, bos=False)[-self.max_len:] or [self.tokenizer.pad_token_id]
                for t in texts]  # the tail holds the outcome-bearing part: the last observations
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, r in enumerate(rows):  # right padding; the head reads each row's own last token
            ids[i, :len(r)] = torch.tensor(r)
            attn[i, :len(r)] = 1
        return ids, attn, torch.tensor([len(r) - 1 for r in rows])

    def logits(self, texts: Sequence[str]):
        import torch

        device = next(self.backbone.parameters()).device
        ids, attn, last = self._encode(texts)
        out = self.backbone(input_ids=ids.to(device), attention_mask=attn.to(device), output_hidden_states=True,
                            use_cache=False)
        hidden = out.hidden_states[-1][torch.arange(len(texts)), last.to(device)]
        return self.head(hidden.float()).squeeze(-1)

    def score_texts(self, texts: Sequence, batch_size: int = 16) -> list[float]:
        """Scores in [0, 1]; each item a text or (text, is_structure) segments, as `_encode` reads them."""
        import torch

        self.backbone.eval()
        scores = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                scores += torch.sigmoid(self.logits(texts[i:i + batch_size])).tolist()
        return scores


def train(examples: list[Example], init: str, out: str | Path, *, epochs: int = 8, lr: float = 3e-4,
          batch_size: int = 16, max_len: int = 512, holdout: float = 0.2, seed: int = 0,
          progress=None) -> dict:
    """Fit the reward model; returns held-out AUC of the model and of the length and turn-count baselines
    (each baseline in its better direction), measured on the same held-out examples."""
    import torch

    from cwm.data.documents import prompt_ids

    rng = random.Random(seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    n_held = int(round(holdout * len(examples)))
    held = [examples[i] for i in order[:n_held]]
    fit = [examples[i] for i in order[n_held:]]
    rm = RewardModel.from_init(init, max_len=max_len, seed=seed)
    params = list(rm.backbone.parameters()) + list(rm.head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    rm.backbone.train()
    for epoch in range(epochs):
        rng.shuffle(fit)
        for i in range(0, len(fit), batch_size):
            batch = fit[i:i + batch_size]
            target = torch.tensor([e.target for e in batch])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(rm.logits([e.model_input for e in batch]), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if progress:
                progress(epoch * len(fit) + i + len(batch), epochs * len(fit), loss.item())
    report = {"examples": len(examples), "train": len(fit), "held_out": len(held),
              "held_out_passed": sum(e.passed for e in held)}
    if held:
        labels = [e.passed for e in held]
        scores = rm.score_texts([e.model_input for e in held])
        lengths = [float(len(prompt_ids(rm.tokenizer, e.model_input, bos=False))) for e in held]
        turns = [float(e.turns) for e in held]
        both_ways = lambda s: max(auc(s, labels), auc([-x for x in s], labels))  # noqa: E731
        report.update(auc=auc(scores, labels), auc_length=both_ways(lengths), auc_turns=both_ways(turns))
    rm.save(out, {"init": str(init), "epochs": epochs, "lr": lr, "seed": seed, "report": report})
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cwm.rl.reward_model", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train on trajectory / code-generation sample shards")
    tr.add_argument("--trajectories", action="append", required=True, metavar="SHARDS",
                    help="shard dir, .tar or glob of cwm.trajectory/1 or cwm.codegen_sample/1 records (repeatable)")
    tr.add_argument("--init", required=True, help="HF causal-LM folder to start from (e.g. runs/demo/hf)")
    tr.add_argument("-o", "--out", required=True)
    tr.add_argument("--epochs", type=int, default=8)
    tr.add_argument("--lr", type=float, default=3e-4)
    tr.add_argument("--max-len", type=int, default=512)
    tr.add_argument("--holdout", type=float, default=0.2, help="fraction held out for the AUC report")
    tr.add_argument("--seed", type=int, default=0)
    sc = sub.add_parser("score", help="score episodes with a trained reward model")
    sc.add_argument("--model", required=True)
    sc.add_argument("--trajectories", action="append", required=True, metavar="SHARDS")
    args = parser.parse_args(argv)
    from rich.progress import Progress

    try:
        with Progress(transient=True) as bar:
            job = bar.add_task("reading episodes (partial signals run in the jail)", total=None)
            examples = load_examples(args.trajectories, lambda n: bar.update(job, completed=n))
            if args.command == "score":
                rm = RewardModel.load(args.model)
                for ex, s in zip(examples, rm.score_texts([e.model_input for e in examples])):
                    print(json.dumps({"id": ex.id, "score": round(s, 4), "passed": ex.passed}))
                return 0
            job = bar.add_task("training", total=1)
            report = train(examples, args.init, args.out, epochs=args.epochs, lr=args.lr, max_len=args.max_len,
                           holdout=args.holdout, seed=args.seed,
                           progress=lambda done, total, loss: bar.update(
                               job, completed=done, total=total, description=f"training (loss {loss:.3f})"))
    except (ValueError, OSError) as e:
        print(f"cwm-reward-model: {e}", file=sys.stderr)
        return 2
    print(f"cwm-reward-model: {report['examples']} examples -> {args.out}; held-out AUC {report.get('auc', 'n/a')}"
          f" (length baseline {report.get('auc_length', 'n/a')}, turn-count baseline {report.get('auc_turns', 'n/a')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
