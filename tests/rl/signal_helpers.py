"""Experiments of issue 22's proofs, shared by tests/rl/test_*.py (asserted) and benchmarks/test_rl_signal.py
(the figures over more seeds): a curriculum learning run on a mixed task family."""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch

from rl_helpers import chat_texts, function_records, small_tokenizer, tiny_model
from cwm.rl.env import finished
from cwm.rl.envs.output_prediction import OutputPredictionEnv, task_from_record


class _FixedVerdictEnv(OutputPredictionEnv):
    """An output-prediction prompt whose check ignores the reply: a task the policy always passes (its tests
    are vacuous) or never passes (its expected value cannot be written in the reply budget)."""

    def __init__(self, task, verdict: bool):
        super().__init__(task)
        self.verdict = verdict

    def step(self, action):
        return finished(self.verdict)


class _DigitCheckEnv(OutputPredictionEnv):
    """A learnable task: its check accepts any one-digit answer (as a test that checks only the type and range
    of a value would). An untrained policy passes it about 10 times in 64, so its groups carry signal at once."""

    def step(self, action):
        return finished(action.strip() in DIGITS)


DIGITS = tuple("0123456789")


class MixedTasks:
    """One environment family: `always` always-solved tasks, `never` never-solved ones and the learnable ones
    (write any digit), in a fixed shuffled order."""

    name = OutputPredictionEnv.name   # what its episodes report as Trajectory.env

    def __init__(self, always: int = 8, never: int = 8, learnable: int = 4, answer: int = 7, seed: int = 0):
        import random

        source = f"def f(x):\n    return {answer}\n"
        records = function_records(source, "f", list(range(always + never + learnable)))
        tasks = [task_from_record(r) for r in records]
        kinds = ["always"] * always + ["never"] * never + ["learnable"] * learnable
        random.Random(seed).shuffle(kinds)
        self.items = list(zip(kinds, tasks))
        self.answer = answer

    def __len__(self):
        return len(self.items)

    def make(self, index):
        kind, task = self.items[index % len(self.items)]
        if kind == "learnable":
            return _DigitCheckEnv(task)
        return _FixedVerdictEnv(task, kind == "always")

    def indices(self, kind: str) -> list[int]:
        return [i for i, (k, _) in enumerate(self.items) if k == kind]


@dataclass
class CurriculumRun:
    signal_fracs: list[float]        # per step: share of the step's groups with a non-zero advantage
    learnable_reward: list[float]    # per step (after the update): exact expected reward on the learnable tasks
    learnable_groups: int            # groups drawn on learnable tasks over the run

    def steps_to(self, target: float) -> int | None:
        """The first step (1-based) after which the learnable tasks' expected reward is >= target."""
        return next((i + 1 for i, r in enumerate(self.learnable_reward) if r >= target), None)


def run_curriculum(curriculum: bool, *, seed: int, steps: int, groups_per_step: int = 4, group_size: int = 8,
                   lr: float = 1e-2) -> CurriculumRun:
    """GRPO with the library's rollout loop, learner step and (when `curriculum`) CurriculumSampler, on
    MixedTasks; otherwise the default shuffled-cycle TaskSampler. Same model, data and seeds in both arms.

    The learnable tasks' reward is computed exactly, not sampled: with one-token replies the expected reward is
    2·P(a digit) − 1 under the current policy, read off one forward pass per prompt."""
    from cwm.rl.curriculum import CurriculumConfig, make_sampler
    from cwm.rl.generate import LocalGenerator, SamplingConfig
    from cwm.rl.grpo import GRPOConfig
    from cwm.rl.learner import backward_batch, select
    from cwm.rl.rollout import ChatFormat, RolloutConfig, rollout_groups

    family = MixedTasks(seed=seed)
    tok = small_tokenizer(chat_texts([t for _, t in family.items]))
    model = tiny_model(tok, seed=seed)
    chat = ChatFormat(tok)
    generator = LocalGenerator(copy.deepcopy(model), chat.stop_ids, tok.pad_token_id, seed=seed + 1000)
    sampler = make_sampler([family], None, seed, CurriculumConfig(enabled=curriculum), group_size)
    grpo = GRPOConfig(token_budget=group_size * groups_per_step)
    rollout_cfg = RolloutConfig(sampling=SamplingConfig(temperature=1.0, max_new_tokens=1), max_len=512,
                                env_workers=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    learnable = family.indices("learnable")
    prompts = [chat.encode(family.make(i).reset(), first=True) for i in learnable]
    digit_ids = tok.convert_tokens_to_ids(list(DIGITS))
    signal, rewards, learnable_groups = [], [], 0
    for step in range(steps):
        trajs = rollout_groups(sampler, groups_per_step, group_size, generator, chat, rollout_cfg,
                               first_group_id=step * groups_per_step)
        learnable_groups += sum(t.task in learnable for t in trajs) // group_size
        batch = select(trajs, grpo)
        signal.append(1 - batch.skipped_groups / groups_per_step)
        optimizer.zero_grad(set_to_none=True)
        totals = backward_batch(model, batch, grpo, pad_id=tok.pad_token_id, temperature=1.0,
                                micro_batch_tokens=16384)
        if totals["tokens"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        generator.model.load_state_dict(model.state_dict())
        generator.version = step + 1
        if curriculum:
            sampler.update((t.env, t.task, t.passed) for t in trajs)
        with torch.no_grad():
            p = [torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)[digit_ids].sum().item()
                 for ids in prompts]
        rewards.append(2 * sum(p) / len(p) - 1)
    return CurriculumRun(signal, rewards, learnable_groups)


# -- search: a code-generation set and a fixture policy --------------------------------------------------------

REFERENCES = {  # entry: (reference source, inputs (argument tuples))
    "add": ("def add(a, b):\n    return a + b\n", [(2, 3), (-1, 1), (10, 5), (0, 0)]),
    "largest": ("def largest(xs):\n    best = xs[0]\n    for x in xs:\n        if x > best:\n            best = x\n"
                "    return best\n", [([3, 1, 2],), ([-5, -2],), ([7],), ([1, 9, 9, 4],)]),
    "reverse": ("def reverse(s):\n    return s[::-1]\n", [("abc",), ("",), ("ab",), ("racecar!",)]),
    "factorial": ("def factorial(n):\n    out = 1\n    for i in range(2, n + 1):\n        out = out * i\n"
                  "    return out\n", [(0,), (1,), (4,), (6,)]),
    "is_prime": ("def is_prime(n):\n    if n < 2:\n        return False\n    i = 2\n    while i * i <= n:\n"
                 "        if n % i == 0:\n            return False\n        i += 1\n    return True\n",
                 [(1,), (2,), (9,), (13,), (25,)]),
    "count_vowels": ("def count_vowels(s):\n    n = 0\n    for c in s:\n        if c in 'aeiou':\n"
                     "            n += 1\n    return n\n", [("hello",), ("xyz",), ("aeiou",), ("banana",)]),
    "gcd": ("def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n",
            [(12, 18), (7, 3), (10, 5), (0, 4)]),
    "clamp": ("def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    if x > hi:\n        return hi\n"
              "    return x\n", [(5, 0, 10), (-3, 0, 10), (12, 0, 10), (0, 0, 0)]),
    "sum_squares": ("def sum_squares(xs):\n    total = 0\n    for x in xs:\n        total += x * x\n"
                    "    return total\n", [([1, 2, 3],), ([],), ([-2],), ([4, 0, 1],)]),
    "fib": ("def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
            [(0,), (1,), (7,), (10,)]),
    "is_palindrome": ("def is_palindrome(s):\n    return s == s[::-1]\n", [("abba",), ("abc",), ("",), ("aba",)]),
    "middle": ("def middle(xs):\n    ys = sorted(xs)\n    return ys[len(ys) // 2]\n",
               [([3, 1, 2],), ([5, 4, 9, 1, 7],), ([8],), ([2, 2, 1],)]),
}


def _call(entry: str, args: tuple) -> str:
    return f"{entry}({', '.join(repr(a) for a in args)})"


def codegen_set():
    """CodeTasks (cwm/rl/envs/codegen.py) with hidden tests computed from the reference solutions."""
    from cwm.rl.envs.codegen import CodeTask

    tasks = []
    for entry, (source, inputs) in REFERENCES.items():
        ns: dict = {}
        exec(source, ns)
        tests = tuple(f"assert {_call(entry, a)} == {ns[entry](*a)!r}" for a in inputs)
        tasks.append(CodeTask(id=entry, prompt=f"Write {entry}.", entry=entry, tests=tests))
    return tasks


class FixturePolicy:
    """A sampling policy over the code-generation set whose pass@1 is well below 1 and pass@n well above: a
    solution is the reference with probability `p_correct`, else one of the forager's mutants of it
    (`cwm.forager.mutate`: removed lines, swapped variables, replaced operators, ...); a proposed test asserts
    the reference's value with probability `p_test_correct`, else a wrong one (another input's value, or the
    right value nudged). It answers in the reply layouts a chat model uses, so the real parsers run."""

    def __init__(self, seed: int, p_correct: float = 0.3, p_test_correct: float = 0.6):
        import random

        from cwm.forager.mutate import candidates

        self.rng = random.Random(seed)
        self.p_correct, self.p_test_correct = p_correct, p_test_correct
        self.mutants = {e: [m.source for m in candidates(f"{e}.py", src)] for e, (src, _) in REFERENCES.items()}

    def _entry(self, messages) -> str:
        text = messages[-1]["content"]
        return next(e for e in REFERENCES if f"`{e}`" in text or f"Write {e}." in text)

    def __call__(self, messages, k):
        entry = self._entry(messages)
        source, inputs = REFERENCES[entry]
        if "assert statements" in messages[-1]["content"]:
            return [self._tests(entry, source, inputs) for _ in range(k)]
        out = []
        for _ in range(k):
            code = source if self.rng.random() < self.p_correct else self.rng.choice(self.mutants[entry])
            out.append(f"Here is my solution:\n```python\n{code}```")
        return out

    def _tests(self, entry, source, inputs):
        ns: dict = {}
        exec(source, ns)
        values = [ns[entry](*a) for a in inputs]
        lines = []
        for i, a in enumerate(inputs):
            value = values[i]
            if self.rng.random() >= self.p_test_correct:
                others = [v for v in values if v != value]
                value = self.rng.choice(others) if others and self.rng.random() < 0.5 else _nudge(value)
            lines.append(f"assert {_call(entry, a)} == {value!r}")
        return "```python\n" + "\n".join(lines) + "\n```"


def _nudge(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value + [0]
    return None


# -- tree search: forager tasks on the demo repository, a fixture agent policy -------------------------------

CALC_BUGS = {  # a function of the forager's demo repository (cwm/forager/demo.py) -> (right line, bug)
    "add": ("    return a + b\n", "    return a - b\n"),
    "scale": ("        out.append(v * factor)\n", "        out.append(v + factor)\n"),
    "clamp": ("    if x < low:\n", "    if x > low:\n"),
    "hypot": ("    return math.sqrt(a * a + b * b)\n", "    return math.sqrt(a * a - b * b)\n"),
}
# the agent's quick test run: every test function of tests/test_calc.py, a pytest-style summary line
TEST_COMMAND = ("python -c \"import sys; sys.path.insert(0, 'tests'); import test_calc as m\n"
                "fns = [f for n, f in vars(m).items() if n.startswith('test_')]\nok = 0\n"
                "for f in fns:\n    try:\n        f(); ok += 1\n    except Exception:\n        pass\n"
                "print(f'{len(fns) - ok} failed, {ok} passed')\"")


def calc_tasks(repo_dir, bugs: int = 2):
    """Mutate-fix tasks with `bugs` bugs each (every such subset of CALC_BUGS) on a local copy of the demo
    repository."""
    import itertools
    import textwrap

    from cwm.forager.demo import DEMO_FILES, write_demo_repo
    from cwm.forager.tasks import Task

    write_demo_repo(repo_dir)
    fixed = textwrap.dedent(DEMO_FILES["calc/__init__.py"])
    tests = [f"tests/test_calc.py::test_{name}" for name in CALC_BUGS]
    tasks = []
    for names in itertools.combinations(CALC_BUGS, bugs):
        broken = fixed
        for name in names:
            right, bug = CALC_BUGS[name]
            assert broken.count(right) == 1
            broken = broken.replace(right, bug)
        failing = [f"tests/test_calc.py::test_{name}" for name in names]
        tasks.append(Task(id="calc-" + "-".join(names), kind="mutate-fix", repo="calc", commit=None, image="local",
                          statement=f"{' and '.join(failing)} fail. Fix the code in calc/__init__.py.",
                          fail_to_pass=failing, pass_to_pass=[t for t in tests if t not in failing],
                          mutation=None, start_files={"calc/__init__.py": broken},
                          fix_files={"calc/__init__.py": fixed}))
    return tasks


class FixtureAgent:
    """A sampling agent policy for the calc tasks, in the forager's tool-call format: after an edit it runs the
    tests; when the last run showed no failure it submits (p_submit_green), else it submits anyway (p_submit),
    makes a right edit (reverts one of the bugs the statement names, p_right) or a wrong one (introduces another
    bug, which it never undoes). Its episodes resolve a task now and then."""

    def __init__(self, seed: int, p_submit: float = 0.1, p_right: float = 0.5, p_submit_green: float = 0.9):
        import random

        self.rng = random.Random(seed)
        self.p_submit, self.p_right, self.p_submit_green = p_submit, p_right, p_submit_green

    def __call__(self, messages, k):
        return [self._turn(messages) for _ in range(k)]

    def _turn(self, messages):
        from cwm.forager.agent import ToolCall, format_tool_call

        last = next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), "")
        if "<tool: edit>" in last:
            return format_tool_call(ToolCall("bash", {"command": TEST_COMMAND}))
        last_obs = next((m["content"] for m in reversed(messages) if m["role"] == "tool"), "")
        p_submit = self.p_submit_green if re.search(r"\b0 failed", last_obs) else self.p_submit
        if self.rng.random() < p_submit:
            return format_tool_call(ToolCall("submit", {}))
        statement = next(m["content"] for m in messages if m["role"] == "user")
        named = [n for n in CALC_BUGS if f"test_{n}" in statement]
        if self.rng.random() < self.p_right:
            right, bug = CALC_BUGS[self.rng.choice(named)]
            search, replace = bug, right
        else:
            right, bug = CALC_BUGS[self.rng.choice([n for n in CALC_BUGS if n not in named])]
            search, replace = right, bug
        return format_tool_call(ToolCall("edit", {"path": "calc/__init__.py", "search": search,
                                                  "replace": replace}))


def calc_env_maker(task, repo_dir, max_turns: int = 12):
    from cwm.forager.agent import EpisodeConfig
    from cwm.forager.sandbox import open_sandbox
    from cwm.rl.envs.swe import SWEEnv

    cfg = EpisodeConfig(max_turns=max_turns, bash_timeout_s=60, test_timeout_s=120)
    return lambda: SWEEnv(task, lambda t: open_sandbox("local", source=repo_dir), cfg)


# -- reward model: code-generation samples of the fixture policy ---------------------------------------------

def write_codegen_samples(out_dir, *, seed: int, per_task: int):
    """Shards of `cwm.codegen_sample/1` records: `per_task` FixturePolicy answers to every task of codegen_set."""
    from cwm.data.shards import ShardWriter, record_key

    policy = FixturePolicy(seed)
    records = []
    for task in codegen_set():
        for j, reply in enumerate(policy(task.messages(), per_task)):
            records.append({"schema": "cwm.codegen_sample/1", "id": f"{task.id}-{seed}-{j}",
                            "task": {"id": task.id, "prompt": task.prompt, "entry": task.entry,
                                     "tests": list(task.tests)}, "reply": reply})
    with ShardWriter(out_dir, "sample") as writer:
        writer.add([(record_key(r), r) for r in records])
    return records
