"""`cwm-eval swe` on the bundled sample (mutate-fix tasks on the forager's demo image, in Docker): the oracle
policy resolves every task in every episode, the wrong one (submits at once) none."""
import json

import pytest

from cwm.eval.cli import main

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_swe_oracle_resolves_all_and_wrong_none(docker_client, tmp_path):
    oracle, wrong = tmp_path / "oracle", tmp_path / "wrong"
    assert main(["swe", "--model", "oracle", "--n", "2", "-o", str(oracle), "--no-progress"]) == 0
    tasks = oracle / "sample_tasks.jsonl"
    assert main(["swe", str(tasks), "--model", "wrong", "-o", str(wrong), "--no-progress"]) == 0
    good, bad = (json.loads((d / "summary.json").read_text()) for d in (oracle, wrong))
    assert good["examples"] == bad["examples"] >= 1
    assert good["resolved"] == good["pass@1"] == good["pass@2"] == 1.0 and good["sandbox_errors"] == 0
    assert bad["resolved"] == bad["pass@1"] == 0.0 and bad["sandbox_errors"] == 0
    rows = [json.loads(line) for line in (oracle / "results.jsonl").read_text().splitlines()]
    assert all(r["n"] == 2 and all(e["outcome"] == "submitted" for e in r["episodes"]) and r["answer"] for r in rows)
    # every container this process started is gone (the low-level list: others' containers may vanish meanwhile)
    from cwm.forager.sandbox import OWNER_LABEL, owner_id

    assert not docker_client.api.containers(all=True, filters={"label": f"{OWNER_LABEL}={owner_id()}"})


def test_swe_tree_search_resolves_with_the_oracle_and_not_with_the_wrong_policy(docker_client, tmp_path):
    """`--search tree`: the oracle's line is found within the budget, the never-right policy's is not, and the
    search's containers are gone afterwards."""
    oracle, wrong = tmp_path / "oracle", tmp_path / "wrong"
    assert main(["swe", "--model", "oracle", "--search", "tree", "--budget", "8", "-o", str(oracle),
                 "--no-progress"]) == 0
    tasks = oracle / "sample_tasks.jsonl"
    assert main(["swe", str(tasks), "--model", "wrong", "--search", "tree", "-o", str(wrong), "--no-progress"]) == 0
    good, bad = (json.loads((d / "summary.json").read_text()) for d in (oracle, wrong))
    assert good["search_resolved"] == 1.0 and bad["search_resolved"] == 0.0
    rows = [json.loads(line) for line in (oracle / "results.jsonl").read_text().splitlines()]
    for r in rows:
        s = r["search"]
        assert s["resolved"] and s["turns_sampled"] <= 8 and "<tool: submit>" in s["best_turns"][-1]
    from cwm.forager.sandbox import OWNER_LABEL, owner_id

    assert not docker_client.api.containers(all=True, filters={"label": f"{OWNER_LABEL}={owner_id()}"})
