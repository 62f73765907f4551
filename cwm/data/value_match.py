"""Is a predicted value the true one? The one comparison every stage that scores a predicted value uses
(`cwm-eval`'s output/input/trace prediction, the trainer's in-training eval, the RL output-prediction reward), so
a number measured in evaluation and a reward paid in RL mean the same thing.

Rules (`reprs_match(predicted, expected)` on text, `values_match(a, b)` on Python values):

1. Both sides are read as Python literals: `ast.literal_eval` of the stripped text, extended with the reprs
   that Python prints for values `literal_eval` refuses: `inf`, `nan` (also signed, also inside containers),
   `frozenset(...)` of a literal, and `set()`. Nothing is ever executed (a call other than those, a name, an
   attribute or an operator other than unary minus/plus and complex `a+bj` makes the side *unparseable*).
   Texts over `MAX_LITERAL_CHARS` are treated as unparseable (no quadratic parse of a megabyte repr).
2. Both parse: the values are compared with STRICT TYPES, recursively:
   - the types must be the same (`type(a) is type(b)`): `True` is not `1`, `1` is not `1.0`, `(1,)` is not
     `[1]`, `'1'` is not `1`, `b'a'` is not `'a'`, `{1}` is not `frozenset({1})`. Decided for int vs float:
     a function that returns `1.0` and one that returns `1` are different programs, and the repr the model
     must predict shows the difference; Python's `==` (CRUXEval's `assert f(x) == pred`) would accept both.
   - floats (and each part of a complex) match when `math.isclose(a, b, rel_tol=FLOAT_REL_TOL, abs_tol=0)`,
     i.e. they agree to about 9 significant digits (`0.1 + 0.2` matches `0.3`; `0.333` does not match `1/3`);
     `nan` matches `nan`; `inf` matches only the same-signed `inf`; `-0.0` matches `0.0`.
   - lists and tuples: same length, element by element in order.
   - dicts: the same keys (order ignored, as Python's `==`), each value matching. Keys are compared EXACTLY with
     their types (`{1: 'a'}` is not `{True: 'a'}`, `{1: 'a'}` is not `{1.0: 'a'}`); float tolerance applies to
     values, not keys.
   - sets and frozensets: the same elements compared exactly with their types (no float tolerance inside sets).
   - strings and bytes: exactly equal after the parse, so quoting style does not matter (`'a'` == `"a"`,
     `'it\\'s'` == `"it's"`), but the content does (`'a '` is not `'a'`).
3. Neither parses (`<Foo object at 0x1>`, `Counter({'a': 1})`, `array([1, 2])`, `datetime.date(2020, 1, 1)`):
   the texts are compared normalised: split into Python tokens (`tokenize`), so whitespace between tokens does
   not matter and string literals keep theirs; where the text does not tokenize, runs of whitespace collapse to
   one space. `Counter({'a': 1})` matches `Counter({'a':1})`, not `Counter({'a': 2})`.
4. One side parses and the other does not: no match.

Answers (what a model wrote, `clean_answer`) are read leniently before rule 1: surrounding whitespace and
trailing newlines, a Markdown code fence (```` ```python ... ``` ````) or inline backticks around the whole
answer go. Quotes that belong to a string literal are not stripped: `"3"` is the string '3', not the int 3.
"""
from __future__ import annotations

import ast
import io
import math
import re
import tokenize

FLOAT_REL_TOL = 1e-9
MAX_LITERAL_CHARS = 200_000

_PARSE_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, OverflowError)
_FENCE = re.compile(r"^```[A-Za-z0-9_+-]*[ \t]*\n?(.*?)\n?```$", re.S)
_INLINE = re.compile(r"^`([^`]*)`$")


class NotALiteral(ValueError):
    """The text is not a Python literal under rule 1 of this module."""


def clean_answer(text: str) -> str:
    """A model's answer with the wrapping that does not change it removed (whitespace, a code fence, backticks)."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    inline = _INLINE.match(text)
    if inline:
        text = inline.group(1).strip()
    return text


class _Reprs(ast.NodeTransformer):
    """Rewrites the non-literal reprs Python prints (inf, nan, frozenset(...)) into nodes literal_eval accepts."""

    def visit_Name(self, node: ast.Name):
        if node.id in ("inf", "nan"):
            return ast.copy_location(ast.Constant(float(node.id)), node)
        return node

    def visit_Call(self, node: ast.Call):
        self.generic_visit(node)
        if (isinstance(node.func, ast.Name) and node.func.id == "frozenset" and not node.keywords
                and len(node.args) <= 1):
            inner = ast.literal_eval(node.args[0]) if node.args else ()
            if not isinstance(inner, (set, list, tuple, frozenset)):
                raise NotALiteral("frozenset of a non-container")
            return ast.copy_location(ast.Constant(frozenset(inner)), node)
        return node


def parse_literal(text: str):
    """The Python value a repr/answer text denotes under rule 1; raises `NotALiteral` when it has none."""
    text = text.strip()
    if len(text) > MAX_LITERAL_CHARS:
        raise NotALiteral(f"longer than {MAX_LITERAL_CHARS} characters")
    try:
        return ast.literal_eval(text)
    except _PARSE_ERRORS:
        pass
    try:
        tree = ast.parse(text, mode="eval")
        if not any(isinstance(n, ast.Name) and n.id in ("inf", "nan", "frozenset") for n in ast.walk(tree)):
            raise NotALiteral(f"not a Python literal: {text[:80]!r}")
        return _literal_with_constants(_Reprs().visit(tree).body)
    except NotALiteral:
        raise
    except _PARSE_ERRORS as e:
        raise NotALiteral(f"not a Python literal: {text[:80]!r}") from e


def _literal_with_constants(node):
    """`ast.literal_eval` that also accepts Constant nodes holding a frozenset (made by `_Reprs`)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Tuple):
        return tuple(map(_literal_with_constants, node.elts))
    if isinstance(node, ast.List):
        return list(map(_literal_with_constants, node.elts))
    if isinstance(node, ast.Set):
        return set(map(_literal_with_constants, node.elts))
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise NotALiteral("dict unpacking")
        return {_literal_with_constants(k): _literal_with_constants(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal_with_constants(node.operand)
        if type(value) not in (int, float, complex):
            raise NotALiteral("sign of a non-number")
        return -value if isinstance(node.op, ast.USub) else +value
    return ast.literal_eval(node)  # complex `a+bj`, `set()`, or a refusal


def _exact_key(value):
    """A hashable, type-tagged form for exact comparison of set elements and dict keys (nan equals nan)."""
    kind = type(value)
    if kind is float:
        return (kind, "nan") if math.isnan(value) else (kind, value + 0.0)
    if kind is complex:
        return (kind, _exact_key(value.real), _exact_key(value.imag))
    if kind is tuple:
        return (kind, tuple(_exact_key(v) for v in value))
    if kind is frozenset:
        return (kind, frozenset(_exact_key(v) for v in value))
    return (kind, value)


def _floats_match(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=FLOAT_REL_TOL, abs_tol=0.0)


def values_match(a, b) -> bool:
    """Rule 2: the two Python values are the same value of the same types (see the module docstring)."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is float:
        return _floats_match(a, b)
    if kind is complex:
        return _floats_match(a.real, b.real) and _floats_match(a.imag, b.imag)
    if kind in (list, tuple):
        return len(a) == len(b) and all(values_match(x, y) for x, y in zip(a, b))
    if kind is dict:
        if len(a) != len(b):
            return False
        b_by_key = {_exact_key(k): v for k, v in b.items()}
        for k, v in a.items():
            key = _exact_key(k)
            if key not in b_by_key or not values_match(v, b_by_key[key]):
                return False
        return True
    if kind in (set, frozenset):
        return len(a) == len(b) and {_exact_key(x) for x in a} == {_exact_key(y) for y in b}
    return a == b


def normalised_text(text: str) -> tuple[str, ...]:
    """Rule 3: the text as its Python tokens (whitespace between tokens dropped), else whitespace-collapsed."""
    text = text.strip()
    try:
        tokens = tuple(t.string for t in tokenize.generate_tokens(io.StringIO(text).readline)
                       if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT,
                                         tokenize.ENDMARKER, tokenize.COMMENT))
        return tokens
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return (" ".join(text.split()),)


def reprs_match(predicted: str, expected: str) -> bool:
    """Rules 1-4 on two texts: `predicted` (an answer, cleaned by `clean_answer`) against `expected` (a repr)."""
    predicted, expected = clean_answer(predicted), expected.strip()
    try:
        want = parse_literal(expected)
    except NotALiteral:
        want = _UNPARSED
    try:
        got = parse_literal(predicted)
    except NotALiteral:
        got = _UNPARSED
    if want is _UNPARSED and got is _UNPARSED:
        return normalised_text(predicted) == normalised_text(expected)
    if want is _UNPARSED or got is _UNPARSED:
        return False
    return values_match(got, want)


_UNPARSED = object()
