"""Environments: output prediction compares values, code generation runs hidden tests in the jail."""
import pytest

from cwm.jail import Limits
from cwm.rl.envs.codegen import CodeGenEnv, CodeTask
from cwm.rl.envs.output_prediction import OutputPredictionEnv, parse_answer, same_value, task_from_record
from rl_helpers import function_records


def test_output_prediction_rewards_values_not_strings():
    (record,) = function_records("def f(x):\n    return {'a': [x, 2.5], 'b': (x,)}\n", "f", [1])
    task = task_from_record(record)
    assert task.call == "f(1)" and "START_OF_TRACE" not in task.source
    for reply, reward in [("{'b': (1,), 'a': [1, 2.5]}", 1.0),       # other key order, other spacing
                          ("```python\n{'a':[1,2.5],'b':(1,)}\n```", 1.0),
                          ("{'a': [1, 2.5], 'b': [1]}", -1.0),         # a list is not a tuple
                          ("{'a': [True, 2.5], 'b': (1,)}", -1.0),     # True is not 1
                          ("the answer is 3", -1.0)]:
        result = OutputPredictionEnv(task).step(reply)
        assert (result.reward, result.done) == (reward, True), reply
    assert "malformed" in OutputPredictionEnv(task).step("the answer is 3").info


def test_records_that_give_no_task():
    (ok,) = function_records("def f(x):\n    return x\n", "f", [3])
    raised = dict(ok, outcome="raised")
    none = function_records("def f(x):\n    return None\n", "f", [3])[0]
    opaque = function_records("def f(x):\n    return object()\n", "f", [3])[0]
    assert task_from_record(ok).expected == "3"
    assert task_from_record(raised) is None and task_from_record(opaque) is None
    assert task_from_record(none) is None and task_from_record(none, skip_none=False).expected == "None"


def test_same_value_edge_cases():
    assert same_value(float("nan"), float("nan")) and same_value({1, 2}, {2, 1})
    assert not same_value(1, 1.0) and not same_value((1,), [1])
    with pytest.raises(ValueError):
        parse_answer("__import__('os')")


@pytest.fixture
def add_task():
    return CodeTask(id="add", prompt="Write add(a, b) returning the sum.", entry="add",
                    tests=("assert add(2, 3) == 5", "assert add(-1, 1) == 0"))


def test_codegen_runs_hidden_tests_in_jail(add_task):
    limits = Limits(timeout_s=5.0, memory_mb=256, max_procs=16)
    good = CodeGenEnv(add_task, limits).step("Here:\n```python\ndef add(a, b):\n    return a + b\n```")
    wrong = CodeGenEnv(add_task, limits).step("```python\ndef add(a, b):\n    return a - b\n```")
    assert (good.reward, good.info["passed"]) == (1.0, True)
    assert (wrong.reward, wrong.info["passed"]) == (-1.0, False) and "AssertionError" in wrong.info["stderr_tail"]
    assert CodeGenEnv(add_task, limits).step("def add(a, b) return").info["malformed"].startswith("syntax error")
    assert "no function named add" in CodeGenEnv(add_task, limits).step("def plus(a, b):\n    return a+b").info["malformed"]


def test_codegen_time_limit_kills_a_looping_solution(add_task):
    result = CodeGenEnv(add_task, Limits(timeout_s=1.5, memory_mb=256, max_procs=16)).step(
        "def add(a, b):\n    while True:\n        pass\n")
    assert result.reward == -1.0 and result.info["timed_out"]
