"""Tasks, episodes and collection on the demo repository, in Docker and in the bubblewrap sandbox."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import webdataset as wds

from cwm.data.shards import iter_records
from cwm.forager.agent import EpisodeConfig, run_episode
from cwm.forager.collect import CollectConfig, collect
from cwm.forager.images import image_info
from cwm.forager.policies import NoopPolicy, OraclePolicy, Policy, Reply
from cwm.forager.cli import main
from cwm.forager.sandbox import LABEL, OWNER_LABEL, DockerSandbox, LocalSandbox
from cwm.forager.tasks import Task, generate_issue_fix, generate_mutate_fix, write_tasks

pytestmark = pytest.mark.docker
FAST = EpisodeConfig(bash_timeout_s=20, test_timeout_s=120, wall_s=300)


def _need_bwrap():
    if not shutil.which("bwrap"):
        pytest.skip("bubblewrap not installed (apt-get install bubblewrap)")


@pytest.fixture(scope="module")
def demo_tasks(docker_client, demo_image) -> list[Task]:
    info = image_info(docker_client, demo_image)
    return generate_mutate_fix(demo_image, info.repo, info.commit, info.passing, 3, seed=0, workers=2,
                               open_sandbox=lambda: DockerSandbox(demo_image, dc=docker_client))


@pytest.fixture(params=["docker", "bubblewrap"])
def task_sandbox(request, demo_repo):
    """task -> sandbox, for each backend (the demo tasks are valid on both: same repository)."""
    if request.param == "docker":
        dc = request.getfixturevalue("docker_client")
        return lambda task: DockerSandbox(task.image, dc=dc, run_id=request.node.name[:60])
    _need_bwrap()
    return lambda task: LocalSandbox(demo_repo, bubblewrap=True)


class Scripted(Policy):
    kind, model = "scripted", "scripted"

    def __init__(self, replies: list[str]):
        self.replies = list(replies)

    def act(self, messages):
        text = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return Reply(text, sum(len(m["content"]) for m in messages) // 4)


def test_mutate_fix_tasks_are_valid_and_seeded(demo_tasks, demo_repo, demo_image):
    assert len(demo_tasks) == 3
    for t in demo_tasks:
        assert t.kind == "mutate-fix" and t.fail_to_pass and t.mutation["operator"]
        assert not set(t.fail_to_pass) & set(t.pass_to_pass)
        assert t.fail_to_pass[0] in t.statement
        path = t.mutation["path"]
        assert t.fix_files[path] == (demo_repo / path).read_text() != t.start_files[path]
    assert len({t.id for t in demo_tasks}) == 3
    # same seed, other backend, one worker: the same tasks
    _need_bwrap()
    info_passing = sorted({x for t in demo_tasks for x in t.fail_to_pass + t.pass_to_pass})
    again = generate_mutate_fix(demo_image, demo_tasks[0].repo, None, info_passing, 3, seed=0, workers=1,
                                open_sandbox=lambda: LocalSandbox(demo_repo, bubblewrap=True))
    assert [t.to_json() for t in again] == [t.to_json() for t in demo_tasks]


def test_oracle_wins_and_noop_loses(demo_tasks, task_sandbox):
    task = demo_tasks[0]
    won = run_episode(task, OraclePolicy(), task_sandbox, FAST)
    assert (won["outcome"], won["reward"]) == ("submitted", 1), won["stats"]
    assert [s["tool"] for s in won["steps"]] == ["bash", "edit", "submit"]
    assert won["steps"][0]["exit_code"] == 1  # the failing test fails before the fix
    fixed_line = [line for line in task.fix_files[task.mutation["path"]].splitlines()
                  if line not in task.start_files[task.mutation["path"]].splitlines()]
    assert all(f"+{line}" in won["patch"] for line in fixed_line)
    lost = run_episode(task, NoopPolicy(), task_sandbox, FAST)
    assert (lost["outcome"], lost["reward"], lost["patch"]) == ("submitted", -1, "")


def test_limits_and_format_errors_end_with_minus_one(demo_tasks, docker_client):
    task = demo_tasks[0]
    task_sandbox = lambda t: DockerSandbox(t.image, dc=docker_client)  # noqa: E731
    r = run_episode(task, Scripted(["The bug is in add."]), task_sandbox, FAST)
    assert (r["outcome"], r["reward"], r["stats"]["turns"]) == ("format_error", -1, 1)
    r = run_episode(task, Scripted(["<tool: bash>\nls\n</tool>"]), task_sandbox,
                    EpisodeConfig(max_turns=3, bash_timeout_s=20))
    assert (r["outcome"], r["reward"], len(r["steps"])) == ("step_limit", -1, 3)
    assert "calc" in r["steps"][0]["observation"]
    r = run_episode(task, Scripted(["<tool: bash>\nls\n</tool>"]), task_sandbox, EpisodeConfig(max_tokens=50))
    assert (r["outcome"], r["reward"]) == ("token_limit", -1)
    r = run_episode(task, Scripted(["<tool: bash>\nseq 100000\n</tool>", "<tool: submit>\n</tool>"]),
                    task_sandbox, EpisodeConfig(observation_chars=1000))
    assert len(r["steps"][0]["observation"]) < 1100 and "characters cut" in r["steps"][0]["observation"]


def test_hostile_episode_ends_cleanly(demo_tasks, docker_client, tmp_path):
    canary = tmp_path / "canary"
    canary.write_text("host")
    run_id = f"hostile-{uuid.uuid4().hex[:6]}"
    actions = ["while :; do :; done", ":(){ :|:& };:", "dd if=/dev/zero of=/tmp/fill bs=1M count=100000",
               "cat /dev/zero > fill", f"echo x > {canary}; echo x > /etc/passwd",
               "python3 -c \"import urllib.request; urllib.request.urlopen('http://pypi.org', timeout=3)\"",
               "rm -rf --no-preserve-root /", "echo still-here"]
    policy = Scripted([f"<tool: bash>\n{a}\n</tool>" for a in actions] + ["<tool: submit>\n</tool>"])
    r = run_episode(demo_tasks[0], policy, lambda t: DockerSandbox(t.image, dc=docker_client, run_id=run_id),
                    EpisodeConfig(bash_timeout_s=3, test_timeout_s=60))
    assert r["outcome"] == "submitted" and r["reward"] == -1
    steps = r["steps"]
    assert steps[0]["timed_out"] and steps[1]["seconds"] < 10
    assert "No space left" in steps[2]["observation"] and "No space left" in steps[3]["observation"]
    assert "Read-only" in steps[4]["observation"] or "denied" in steps[4]["observation"]
    assert steps[5]["exit_code"] != 0
    assert steps[7]["observation"].strip().endswith("still-here")
    assert canary.read_text() == "host"
    assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL}.run={run_id}"})


def test_openai_policy_episode_against_loopback_server(demo_tasks, docker_client, chat_server):
    from cwm.forager.policies import OpenAIPolicy

    url, handler = chat_server
    task = demo_tasks[1]
    oracle = OraclePolicy()
    oracle.start(task)
    handler.script = [oracle.act([{"role": "assistant", "content": ""}] * i).text for i in range(len(oracle._plan))]
    policy = OpenAIPolicy(url, "scripted-model")
    r = run_episode(task, policy, lambda t: DockerSandbox(t.image, dc=docker_client), FAST)
    assert (r["outcome"], r["reward"]) == ("submitted", 1)
    assert r["policy"] == {"kind": "openai", "model": "scripted-model"}
    first = handler.requests[0]["body"]["messages"]
    assert first[1]["content"] == task.statement
    assert handler.requests[1]["body"]["messages"][-1]["role"] == "user"  # the observation


def test_hf_policy_episode_with_a_tiny_random_model(demo_tasks, demo_repo, tmp_path):
    _need_bwrap()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from cwm.data.tokenizer import train_bpe
    from cwm.forager.policies import HFPolicy

    texts = [demo_tasks[0].statement, "<tool: bash>\nls\n</tool>", "def add(a, b):\n    return a + b\n"] * 4
    tok = train_bpe(texts, 400, tmp_path / "tok")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=4096))
    policy = HFPolicy(model, tok, max_new_tokens=12, device="cpu")
    r = run_episode(demo_tasks[0], policy, lambda t: LocalSandbox(demo_repo, bubblewrap=True), FAST)
    assert r["policy"]["kind"] == "hf" and r["reward"] == -1
    assert r["outcome"] == "format_error" and r["messages"][-1]["role"] == "assistant"
    assert r["stats"]["tokens"] > len(tok(demo_tasks[0].statement)["input_ids"])


def test_collect_writes_resumable_shards(demo_tasks, docker_client, tmp_path):
    out = tmp_path / "traj"
    open_box = lambda t: DockerSandbox(t.image, dc=docker_client)  # noqa: E731
    summary = collect(demo_tasks, OraclePolicy, open_box, out, CollectConfig(workers=2, episode=FAST),
                      show_progress=False)
    assert summary["episodes"] == 3 and summary["rewards"] == {"1": 3}
    assert summary["actions"] == 6 and summary["median_action_latency_s"] > 0
    assert json.loads((out / "summary.json").read_text())["episodes"] == 3
    urls = sorted(str(p) for p in out.glob("trajectories-*.tar"))
    samples = list(wds.WebDataset(urls, shardshuffle=False))  # readable without the toolkit
    assert len(samples) == 3
    rec = json.loads(samples[0]["json"])
    assert rec["schema"] == "cwm.trajectory/1" and rec["task"]["id"] in {t.id for t in demo_tasks}
    assert set(rec) >= {"id", "task", "policy", "messages", "steps", "patch", "reward", "outcome", "stats"}
    again = collect(demo_tasks, OraclePolicy, open_box, out, CollectConfig(workers=2, episode=FAST),
                    show_progress=False)
    assert again["episodes"] == 0 and again["skipped_done"] == 3
    assert len(list(iter_records(out))) == 3


def test_collector_killed_with_sigkill_resumes_and_leaves_no_container(demo_tasks, docker_client, tmp_path,
                                                                       capsys):
    tasks_file, out = tmp_path / "tasks.jsonl", tmp_path / "traj"
    tasks = demo_tasks  # one-episode shards: the first is final once the second episode is written
    write_tasks(tasks, tasks_file)
    argv = ["collect", str(tasks_file), "--policy", "oracle", "--workers", "1", "--shard-samples", "1",
            "-o", str(out), "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "cwm.forager.cli", *argv], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        manifest = out / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text())["shards"]:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the collector finished before it could be killed"
    proc.kill()  # SIGKILL: no cleanup runs
    proc.wait()
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped_done"] >= 1 and summary["episodes"] == 3 - summary["skipped_done"]
    records = list(iter_records(out))
    assert sorted(r["task"]["id"] for r in records) == sorted(t.id for t in tasks)
    assert all(r["reward"] == 1 for r in records)
    owner = f":{proc.pid}"
    assert not [c for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL}=1"})
                if c.labels.get(OWNER_LABEL, "").endswith(owner)]


ISSUE_REPO = {
    "v1": {"calc/__init__.py": "def clamp(x, low, high):\n    return min(x, high)\n\n\ndef add(a, b):\n"
                               "    return a + b\n",
           "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"},
    "v2": {"calc/__init__.py": "def clamp(x, low, high):\n    return max(low, min(x, high))\n\n\n"
                               "def add(a, b):\n    return a + b\n",
           "tests/test_calc.py": "from calc import add, clamp\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"
                                 "\n\ndef test_clamp_low():\n    assert clamp(-5, 0, 3) == 0\n"},
}


def test_issue_fix_tasks_from_git_history(tmp_path):
    _need_bwrap()
    repo = tmp_path / "calc"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for version, message in (("v1", "first version"), ("v2", "clamp ignores the lower bound")):
        for rel, text in ISSUE_REPO[version].items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_text(text)
        if version == "v1":
            subprocess.run(["git", "init", "-q", str(repo)], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", message], check=True)
    open_box = lambda *a: LocalSandbox(repo, bubblewrap=True)  # noqa: E731
    tasks = generate_issue_fix(repo, "local", open_sandbox=open_box, n=5)
    assert len(tasks) == 1
    task = tasks[0]
    assert task.kind == "issue-fix" and task.fail_to_pass == ["tests/test_calc.py::test_clamp_low"]
    assert task.pass_to_pass == ["tests/test_calc.py::test_add"]
    assert "clamp ignores the lower bound" in task.statement
    assert "test_clamp_low" not in task.start_files["tests/test_calc.py"]  # hidden until scoring
    assert run_episode(task, OraclePolicy(), open_box, FAST)["reward"] == 1
