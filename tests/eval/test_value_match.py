"""The shared value comparison on a table of tricky pairs, each row checked against the rule it exercises."""
import pytest

from cwm.data.value_match import NotALiteral, clean_answer, parse_literal, reprs_match, values_match

# (predicted, expected, match?, why)
PAIRS = [
    ("1", "1", True, "same int"),
    ("1", "True", False, "bool is not int"),
    ("True", "1", False, "bool is not int, either side"),
    ("1.0", "1", False, "float is not int (decided: the repr shows the type)"),
    ("1.0", "1.00", True, "same float, other spelling"),
    ("0.30000000000000004", "0.3", True, "floats within rel 1e-9"),
    ("0.333", "0.3333333333333333", False, "floats beyond the tolerance"),
    ("nan", "nan", True, "nan matches nan"),
    ("[nan, 1]", "[nan, 1]", True, "nan inside a container"),
    ("inf", "-inf", False, "infinities of other signs"),
    ("-inf", "-inf", True, "signed infinity"),
    ("-0.0", "0.0", True, "signed zero"),
    ("(1+2j)", "(1+2.0000000001j)", True, "complex parts within tolerance"),
    ("[1, 2]", "[2, 1]", False, "lists are ordered"),
    ("[1,2]", "[1, 2]", True, "spacing"),
    ("(1,)", "[1]", False, "tuple is not list"),
    ("(1,)", "(1, )", True, "tuple spacing"),
    ("[[1, [True]], {'a': (2.5,)}]", "[[1, [True]], {'a': (2.5,)}]", True, "nested containers"),
    ("[[1, [1]], {'a': (2.5,)}]", "[[1, [True]], {'a': (2.5,)}]", False, "bool deep inside"),
    ("{'b': 2, 'a': 1}", "{'a': 1, 'b': 2}", True, "dict order ignored"),
    ("{1: 'a'}", "{True: 'a'}", False, "dict keys compared with types"),
    ("{1.0: 'a'}", "{1: 'a'}", False, "float key is not int key"),
    ("{'a': 1}", "{'a': 1, 'b': 2}", False, "missing key"),
    ("{2, 1}", "{1, 2}", True, "sets unordered"),
    ("{1}", "{True}", False, "set elements with types"),
    ("{1}", "frozenset({1})", False, "set is not frozenset"),
    ("frozenset({1, 2})", "frozenset({2, 1})", True, "frozenset repr parsed"),
    ("frozenset()", "frozenset()", True, "empty frozenset"),
    ("set()", "set()", True, "empty set"),
    ("set()", "{}", False, "empty set is not an empty dict"),
    ('"a"', "'a'", True, "quote style does not matter"),
    ('"it\'s"', "'it\\'s'", True, "escaped quote"),
    ("'a '", "'a'", False, "string content matters"),
    ("'1'", "1", False, "a string is not an int"),
    ("'True'", "True", False, "a string is not a bool"),
    ("b'a'", "'a'", False, "bytes are not str"),
    ("'''x'''", "'x'", True, "triple quotes"),
    ("None", "None", True, "None"),
    ("None", "'None'", False, "None is not a string"),
    ("<Foo object>", "<Foo object>", True, "unparseable, same text"),
    ("<Foo>", "<Bar>", False, "unparseable, other text"),
    ("Counter({'a':1})", "Counter({'a': 1})", True, "unparseable, normalised by tokens"),
    ("Counter({'a': 2})", "Counter({'a': 1})", False, "unparseable, other token"),
    ("Foo('a  b')", "Foo('a b')", False, "whitespace inside a string literal of an unparseable repr counts"),
    ("1", "<Foo>", False, "one side parses, the other not"),
    ("__import__('os')", "__import__('os')", True, "never executed: compared as text"),
    ("`[1, 2]`", "[1, 2]", True, "inline backticks around the answer"),
    ("```python\n{'a': 1}\n```", "{'a': 1}", True, "a code fence around the answer"),
    ("'abc'\n", "'abc'", True, "trailing newline"),
    ("  3  ", "3", True, "surrounding whitespace"),
]


@pytest.mark.parametrize("predicted,expected,match,why", PAIRS, ids=[p[3] for p in PAIRS])
def test_tricky_pairs(predicted, expected, match, why):
    assert reprs_match(predicted, expected) is match, why


def test_rows_that_parse_agree_with_a_strict_oracle():
    """An independent oracle for rows whose two sides are plain literals: repr(type tree) equal and == equal."""
    import ast

    def type_tree(v):
        if isinstance(v, (list, tuple)):
            return (type(v).__name__, [type_tree(x) for x in v])
        if isinstance(v, dict):
            return ("dict", sorted((repr(type_tree(k)), repr(type_tree(x))) for k, x in v.items()))
        if isinstance(v, (set, frozenset)):
            return (type(v).__name__, sorted(repr(type_tree(x)) for x in v))
        return type(v).__name__

    checked = 0
    for predicted, expected, _, _ in PAIRS:
        try:
            a, b = ast.literal_eval(clean_answer(predicted)), ast.literal_eval(expected)
        except (ValueError, SyntaxError):
            continue
        if any(isinstance(v, (float, complex)) for v in (a, b)):
            continue  # tolerance: the oracle is exact
        oracle = type_tree(a) == type_tree(b) and a == b
        assert values_match(a, b) is oracle, (predicted, expected)
        checked += 1
    assert checked >= 20


def test_parse_literal_refuses_code_and_oversized_text():
    for text in ("__import__('os')", "x", "1 + 1j + 1", "frozenset('ab')", "-'a'", "[" * 100_000):
        with pytest.raises(NotALiteral):
            parse_literal(text)
    assert parse_literal("[inf, -nan, frozenset({(1, 2)})]")[2] == frozenset({(1, 2)})


def test_callers_use_this_module():
    """Eval and RL score with the same function: a pair they once disagreed on now gets one answer from both."""
    from cwm.eval import world_model
    from cwm.rl.envs import output_prediction

    assert not world_model.same_value("1", "True") and not world_model.same_value("1.0", "1")
    assert output_prediction.same_value is values_match
    env = output_prediction.OutputPredictionEnv(output_prediction.OutputTask("def f(): return 1", "f()", "1"))
    assert env.step("True").reward == -1.0 and env.step("`1`").reward == 1.0
