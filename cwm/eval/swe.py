"""SWE tasks: ForagerAgent tasks (`cwm-forager tasks IMAGE -o TASKS.jsonl`, DESIGN §4) solved by the agent in
Docker, n episodes per task; a task's episode is resolved when every fail-to-pass and pass-to-pass test passes
after submit. Reported: the resolution rate (mean over tasks of resolved episodes / n) and pass@k over the n.

The episode is the forager's own (`cwm.forager.agent.run_episode`: system prompt, text tool calls, bash/edit/
create/submit in a fresh container, `score` on submit); this module only picks the policy for the backend:
`--model DIR` -> the forager's `HFPolicy` on the loaded model, `--base-url` -> `OpenAIPolicy` (chat completions),
`oracle` -> `OraclePolicy` (replays the task's known fix), `wrong` -> `NoopPolicy` (submits at once).

`--search tree` also runs, per task, a tree search over the agent's turns (`cwm.rl.search.tree_search`: best-first
on the pass fraction of the tests the agent ran, backtracking to the best earlier state) with the budget the n
episodes had (n x max_turns policy turns, or `--budget`), and reports `search_resolved` next to `resolved`;
`--reward-model DIR` values the states by a learned reward model instead.
"""
from __future__ import annotations

from cwm.eval.backends import BackendError, HFBackend, OpenAIBackend, OracleBackend, SamplingParams, WrongBackend
from cwm.eval.harness import EvalInputError, pass_at_k_table

FORMAT = "forager task records (`cwm-forager tasks IMAGE -o TASKS.jsonl`)"


def load_examples(path) -> list[dict]:
    from cwm.forager.tasks import TaskError, load_tasks

    try:
        tasks = load_tasks(path)
    except FileNotFoundError:
        raise EvalInputError(f"{path}: no such file; expected {FORMAT}") from None
    except TaskError as e:
        raise EvalInputError(str(e)) from None
    return [{"id": t.id, "task": t} for t in tasks]


def make_demo_tasks(out, count: int = 2) -> list[dict]:
    """The bundled SWE sample: mutate-fix tasks on the forager's demo repository image (built on first use, then
    cached by Docker), made by the forager's own task generator and written to `out`."""
    import tempfile
    from pathlib import Path

    from cwm.forager import images
    from cwm.forager.demo import ensure_demo_image
    from cwm.forager.sandbox import DockerSandbox
    from cwm.forager.tasks import TaskError, generate_mutate_fix, write_tasks

    try:
        dc = images.client()
        image = ensure_demo_image(dc, Path(tempfile.mkdtemp(prefix="cwm-eval-swe-")) / "calc")
        info = images.image_info(dc, image)
        tasks = generate_mutate_fix(image, info.repo, info.commit, info.passing, count, seed=0,
                                    open_sandbox=lambda: DockerSandbox(image, dc=dc, run_id="eval-demo-task"))
    except images.ImageError as e:
        raise BackendError(f"swe: the bundled sample needs a Docker engine ({e}); start one or pass TASKS.jsonl") \
            from None
    except TaskError as e:
        raise EvalInputError(f"swe: the bundled sample task could not be made ({e}); pass TASKS.jsonl") from None
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_tasks(tasks, Path(out))
    return load_examples(out)


def policy_for(backend, params: SamplingParams):
    from cwm.forager.policies import HFPolicy, NoopPolicy, OpenAIPolicy, OraclePolicy

    if isinstance(backend, OracleBackend):
        return OraclePolicy()
    if isinstance(backend, WrongBackend):
        return NoopPolicy()
    if isinstance(backend, HFBackend):
        return HFPolicy(backend.model, backend.tokenizer, max_new_tokens=params.max_tokens,
                        temperature=params.temperature, device=backend.device)
    if isinstance(backend, OpenAIBackend):
        return OpenAIPolicy(backend.base_url, backend.model_name, temperature=params.temperature,
                            max_reply_tokens=params.max_tokens)
    raise BackendError(f"backend {backend.name} cannot drive the SWE agent")


class SWE:
    name = "swe"

    def __init__(self, max_turns: int = 32, bash_timeout_s: float = 120.0, test_timeout_s: float = 900.0,
                 search: str | None = None, budget: int | None = None, branch: int = 3,
                 reward_model: str | None = None):
        self.max_turns, self.bash_timeout_s, self.test_timeout_s = max_turns, bash_timeout_s, test_timeout_s
        self.search, self.budget, self.branch, self.reward_model = search, budget, branch, reward_model
        self._value = None
        self._dc = None

    def settings(self) -> dict:
        search = {"search": self.search, "budget": self.budget, "branch": self.branch,
                  "value": f"reward model {self.reward_model}" if self.reward_model else "tests"}
        return {"max_turns": self.max_turns, **(search if self.search else {})}

    def default_params(self) -> dict:
        return {"max_tokens": 1024}

    def _docker(self):
        if self._dc is None:
            from cwm.forager import images
            from cwm.forager.sandbox import sweep_containers

            try:
                self._dc = images.client()
            except images.ImageError as e:
                raise BackendError(f"swe: needs a Docker engine ({e}); start one") from None
            sweep_containers(self._dc)
        return self._dc

    def run(self, backend, examples: list[dict], params: SamplingParams) -> list[dict]:
        from cwm.forager.agent import EpisodeConfig, run_episode
        from cwm.forager.sandbox import open_sandbox

        dc = self._docker()
        cfg = EpisodeConfig(max_turns=self.max_turns, bash_timeout_s=self.bash_timeout_s,
                            test_timeout_s=self.test_timeout_s)
        rows = []
        for ex in examples:
            episodes = []
            for _ in range(params.n):
                policy = policy_for(backend, params)
                record = run_episode(ex["task"], policy, lambda t: open_sandbox("docker", image=t.image, dc=dc),
                                     cfg)
                episodes.append({"reward": record["reward"], "outcome": record["outcome"],
                                 "turns": record["stats"].get("turns"), "patch": record["patch"]})
            correct = sum(e["reward"] > 0 for e in episodes)
            row = {"id": ex["id"], "prompt": ex["task"].statement, "answer": episodes[0]["patch"],
                   "episodes": episodes, "correct": correct, "n": len(episodes), "score": correct / len(episodes)}
            if self.search == "tree":
                row["search"] = self._tree(ex["task"], backend, params, cfg,
                                           lambda t: open_sandbox("docker", image=t.image, dc=dc))
            rows.append(row)
        return rows

    def _tree(self, task, backend, params: SamplingParams, cfg, sandbox) -> dict:
        from dataclasses import asdict

        from cwm.rl.envs.swe import SWEEnv
        from cwm.rl.search import reward_model_value, tree_search, value_from_tests_run

        if self._value is None:  # the reward model is loaded once, for every task
            self._value = value_from_tests_run
            if self.reward_model:
                from cwm.rl.reward_model import RewardModel

                self._value = reward_model_value(RewardModel.load(self.reward_model))
        policy = policy_for(backend, params)
        policy.start(task)
        budget = self.budget or params.n * self.max_turns
        r = tree_search(lambda: SWEEnv(task, sandbox, cfg),
                        lambda messages, k: [policy.act(messages).text for _ in range(k)],
                        budget=budget, branch=self.branch, max_depth=self.max_turns, value=self._value)
        return {"mode": "tree", "budget": budget, **asdict(r)}

    def summary(self, rows: list[dict]) -> dict:
        searched = [r["search"] for r in rows if "search" in r]
        extra = {"search_resolved": sum(s["resolved"] for s in searched) / len(searched),
                 "search_turns": sum(s["turns_sampled"] for s in searched) / len(searched)} if searched else {}
        return {"resolved": sum(r["score"] for r in rows) / max(len(rows), 1), **extra,
                "sandbox_errors": sum(e["outcome"] == "sandbox_error" for r in rows for e in r["episodes"]),
                **pass_at_k_table([(r["n"], r["correct"]) for r in rows])}
