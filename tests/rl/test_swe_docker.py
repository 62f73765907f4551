"""The software-engineering environment in real Docker containers, driven through the rollout loop."""
import pytest

from cwm.forager.agent import EpisodeConfig, ToolCall, format_tool_call
from cwm.forager.sandbox import LABEL, DockerSandbox
from cwm.rl.envs.swe import SWETasks
from cwm.rl.rollout import ChatFormat, RolloutConfig, rollout
from rl_helpers import ScriptedGenerator, demo_swe_task

pytestmark = pytest.mark.docker


def test_swe_episodes_reward_from_the_tasks_tests(docker_client):
    from cwm.data.tokenizer import train_bpe
    import tempfile

    task = demo_swe_task(docker_client)
    tok = train_bpe(["<tool: edit>\ncalc/__init__.py\n return a + b - </tool> submit bash ls"], 300,
                    tempfile.mkdtemp())
    chat = ChatFormat(tok)
    fix = format_tool_call(ToolCall("edit", {"path": "calc/__init__.py", "search": "    return a - b\n",
                                             "replace": "    return a + b\n"}))
    submit = format_tool_call(ToolCall("submit", {}))
    look = format_tool_call(ToolCall("bash", {"command": "grep -n 'a - b' calc/__init__.py"}))
    scripts = [[look, fix, submit],            # investigates, fixes, submits: +1
               [submit],                        # submits the broken code: -1
               ["I think the bug is in add."]]  # no tool call: -1, episode over
    factory = SWETasks([task], lambda t: DockerSandbox(t.image, dc=docker_client, run_id="rl-test"),
                       EpisodeConfig(bash_timeout_s=20, test_timeout_s=120))
    trajs = rollout([factory.make(0) for _ in scripts], ScriptedGenerator(tok, chat.eot_id, scripts), chat,
                    RolloutConfig(max_turns=8, max_len=8192))
    fixed, lazy, chatty = trajs
    assert (fixed.reward, fixed.passed, fixed.turns) == (1.0, True, 3), fixed.info
    assert (lazy.reward, lazy.passed, lazy.turns) == (-1.0, False, 1), lazy.info
    assert lazy.info["tests_failed"] == 1 and lazy.info["outcome"] == "submitted"
    assert (chatty.reward, chatty.turns) == (-1.0, 1) and chatty.info["malformed"].startswith("format_error")
    # the bash observation went back to the policy, masked out of the loss
    observed = tok.decode([t for t, m in zip(fixed.tokens, fixed.mask) if not m])
    assert "return a - b" in observed and "[exit code 0]" in observed
    # every container is gone
    assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL}.run=rl-test"})
