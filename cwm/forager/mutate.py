"""Mutation operators for mutate-fix tasks (the CWM list): each turns working code into a plausible bug.

Operators edit the source *text* at the positions the AST gives, so the rest of the file keeps its formatting
and comments (unparsing the whole module would rewrite every line and make the diff useless as a task):

- remove_body        a function's whole body (after its docstring) becomes `pass`
- remove_statement   one statement of a function is deleted (part of the body)
- remove_argument    one argument of a call is dropped
- reorder_arguments  two neighbouring positional arguments of a call change places
- swap_variables     two different variables in one statement change places
- remove_import      a module-level import is deleted
- remove_return      `return x` becomes `x`
- replace_operator   an arithmetic, comparison, boolean or augmented-assignment operator is replaced

`candidates(path, source)` lists every mutation of a file, in source order; a mutation is only a candidate:
`cwm.forager.tasks` keeps it when the tests say it broke something.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

OPERATORS = ("remove_body", "remove_statement", "remove_argument", "reorder_arguments", "swap_variables",
             "remove_import", "remove_return", "replace_operator")

_BINOP = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "+"), ast.Div: ("/", "*"),
          ast.FloorDiv: ("//", "/"), ast.Mod: ("%", "//"), ast.Pow: ("**", "*"), ast.LShift: ("<<", ">>"),
          ast.RShift: (">>", "<<"), ast.BitOr: ("|", "&"), ast.BitAnd: ("&", "|"), ast.BitXor: ("^", "|")}
_CMPOP = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">"),
          ast.Eq: ("==", "!="), ast.NotEq: ("!=", "=="), ast.In: ("in", "not in"), ast.NotIn: ("not in", "in"),
          ast.Is: ("is", "is not"), ast.IsNot: ("is not", "is")}
_BOOLOP = {ast.And: ("and", "or"), ast.Or: ("or", "and")}


@dataclass(frozen=True)
class Mutation:
    operator: str
    path: str
    line: int
    function: str      # qualified name of the enclosing function ("" for module level)
    source: str        # the whole mutated file

    def to_dict(self) -> dict:
        return {"operator": self.operator, "path": self.path, "line": self.line, "function": self.function}


class _Text:
    """Source text with AST (line, byte-column) positions turned into string offsets."""

    def __init__(self, text: str):
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1] if lineno - 1 < len(self.lines) else ""
        return self.starts[lineno - 1] + len(line.encode()[:col].decode(errors="ignore"))

    def start(self, node) -> int:
        return self.offset(node.lineno, node.col_offset)

    def end(self, node) -> int:
        return self.offset(node.end_lineno, node.end_col_offset)

    def line_start(self, lineno: int) -> int:
        return self.starts[lineno - 1]

    def line_end(self, lineno: int) -> int:
        return self.starts[lineno]

    def indent(self, lineno: int) -> str:
        line = self.lines[lineno - 1]
        return line[: len(line) - len(line.lstrip())]

    def edit(self, *spans: tuple[int, int, str]) -> str:
        out = self.text
        for a, b, new in sorted(spans, reverse=True):
            out = out[:a] + new + out[b:]
        return out


def candidates(path: str, source: str) -> list[Mutation]:
    """Every mutation of `source` (the file at repo-relative `path`) that still compiles and changes the code."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    text = _Text(source)
    found: list[tuple[str, int, str, str]] = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)) and not _is_future(stmt) and _owns_lines(text, stmt):
            found.append(("remove_import", stmt.lineno, "", _delete_lines(text, stmt, tree.body)))
    for qualname, fn in _functions(tree):
        found += [(op, line, qualname, new) for op, line, new in _function_mutations(text, fn)]
    out, seen = [], {source}
    for op, line, qualname, new in found:
        if new in seen:
            continue
        try:
            compile(new, path, "exec")
        except (SyntaxError, ValueError):
            continue
        seen.add(new)
        out.append(Mutation(op, path, line, qualname, new))
    return out


def _functions(tree: ast.Module):
    """(qualified name, node) of every function and method, outer before inner."""
    stack = [("", n) for n in tree.body]
    while stack:
        prefix, node = stack.pop(0)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            stack += [(f"{prefix}{node.name}.<locals>.", n) for n in node.body]
        elif isinstance(node, ast.ClassDef):
            stack += [(f"{prefix}{node.name}.", n) for n in node.body]


def _own_nodes(fn):
    """Nodes of `fn`'s own body, not those of nested functions or classes (they get their own turn)."""
    stack = list(fn.body)
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                stack.append(child)


def _function_mutations(text: _Text, fn) -> list[tuple[str, int, str]]:
    out: list[tuple[str, int, str]] = []
    body = fn.body[1:] if _docstring(fn) else fn.body
    if body and not (len(body) == 1 and isinstance(body[0], ast.Pass)) and body[0].lineno > fn.lineno:
        first, last = body[0], body[-1]
        out.append(("remove_body", first.lineno, text.edit(
            (text.line_start(first.lineno), text.end(last), text.indent(first.lineno) + "pass"))))
    local_names = {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)} | {
        n.id for n in _own_nodes(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    nodes = sorted(_own_nodes(fn), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))
    for block in _blocks(fn):
        stmts = block[1:] if block is fn.body and _docstring(fn) else block
        for stmt in stmts:
            if isinstance(stmt, (ast.Pass, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or \
                    not _owns_lines(text, stmt):
                continue
            if block is fn.body and len(stmts) == 1:
                continue  # the same as remove_body
            out.append(("remove_statement", stmt.lineno, _delete_lines(text, stmt, block)))
    for node in nodes:
        if isinstance(node, ast.Call) and node.lineno == node.end_lineno:
            out += _call_mutations(text, node)
        elif isinstance(node, ast.Return) and node.value is not None:
            out.append(("remove_return", node.lineno, text.edit((text.start(node), text.start(node.value), ""))))
        elif isinstance(node, ast.stmt) and node.lineno == node.end_lineno and \
                not isinstance(node, (ast.If, ast.For, ast.While, ast.With, ast.Try)):
            out += _swaps(text, node, local_names)
        out += _operator_mutations(text, node)
    return out


def _blocks(fn):
    """Every statement list in `fn` (its body, branches, loop bodies, handlers), not inside nested defs."""
    yield fn.body
    for node in _own_nodes(fn):
        for name in ("body", "orelse", "finalbody"):
            block = getattr(node, name, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt) and node is not fn:
                yield block
        for handler in getattr(node, "handlers", []) or []:
            yield handler.body


def _delete_lines(text: _Text, stmt, block) -> str:
    """Delete `stmt`'s lines; a block left empty gets `pass` so the file still parses."""
    start = text.line_start(stmt.lineno)
    end = text.line_end(stmt.end_lineno)
    replacement = text.indent(stmt.lineno) + "pass\n" if len(block) == 1 else ""
    return text.edit((start, end, replacement))


def _owns_lines(text: _Text, stmt) -> bool:
    """The statement is alone on its lines (no `a = 1; b = 2`), so deleting the lines deletes only it."""
    first = text.lines[stmt.lineno - 1]
    last = text.lines[stmt.end_lineno - 1]
    return first[: len(first.encode()[: stmt.col_offset].decode(errors="ignore"))].strip() == "" and \
        last.encode()[stmt.end_col_offset:].decode(errors="ignore").split("#")[0].strip() == ""


def _call_mutations(text: _Text, call: ast.Call) -> list[tuple[str, int, str]]:
    out = []
    args = [a for a in call.args if not isinstance(a, ast.Starred)]
    if len(args) != len(call.args):
        return out
    for i in range(len(call.args)):
        new = ast.Call(call.func, call.args[:i] + call.args[i + 1:], call.keywords)
        out.append(("remove_argument", call.lineno, text.edit((text.start(call), text.end(call), ast.unparse(new)))))
    for i, kw in enumerate(call.keywords):
        if kw.arg is not None:
            new = ast.Call(call.func, call.args, call.keywords[:i] + call.keywords[i + 1:])
            out.append(("remove_argument", call.lineno,
                        text.edit((text.start(call), text.end(call), ast.unparse(new)))))
    for i in range(len(call.args) - 1):
        a, b = call.args[i], call.args[i + 1]
        if ast.dump(a) != ast.dump(b):
            swapped = text.edit((text.start(a), text.end(a), text.text[text.start(b):text.end(b)]),
                                (text.start(b), text.end(b), text.text[text.start(a):text.end(a)]))
            out.append(("reorder_arguments", call.lineno, swapped))
    return out


def _swaps(text: _Text, stmt, local_names: set[str]) -> list[tuple[str, int, str]]:
    """Swap the first occurrences of two different local variables read in a one-line statement."""
    first: dict[str, ast.Name] = {}
    for node in sorted((n for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
                        and n.id in local_names),
                       key=lambda n: n.col_offset):
        first.setdefault(node.id, node)
    names = list(first.values())[:4]
    out = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = names[i], names[j]
            out.append(("swap_variables", stmt.lineno, text.edit((text.start(a), text.end(a), b.id),
                                                                 (text.start(b), text.end(b), a.id))))
    return out


def _operator_mutations(text: _Text, node) -> list[tuple[str, int, str]]:
    """Replace the operator token found in the source gap between two operands."""
    pairs: list[tuple[int, int, tuple[str, str]]] = []  # (gap start, gap end, (old, new))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOP:
        pairs.append((text.end(node.left), text.start(node.right), _BINOP[type(node.op)]))
    elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP:
        old, new = _BINOP[type(node.op)]
        pairs.append((text.end(node.target), text.start(node.value), (old + "=", new + "=")))
    elif isinstance(node, ast.Compare):
        left = node.left
        for op, right in zip(node.ops, node.comparators):
            pairs.append((text.end(left), text.start(right), _CMPOP[type(op)]))
            left = right
    elif isinstance(node, ast.BoolOp):
        for a, b in zip(node.values, node.values[1:]):
            pairs.append((text.end(a), text.start(b), _BOOLOP[type(node.op)]))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        pairs.append((text.start(node), text.start(node.operand), ("not", "")))
    out = []
    for a, b, (old, new) in pairs:
        gap = text.text[a:b]
        word = old[0].isalpha()
        pattern = r"\b" + r"\s+".join(old.split()) + r"\b" if word else \
            r"(?<![*/<>=!+\-%&|^])" + re.escape(old) + r"(?![*/<>=])"
        m = re.search(pattern, gap)
        if m:
            out.append(("replace_operator", node.lineno, text.edit((a + m.start(), a + m.end(), new))))
    return out


def _docstring(fn) -> bool:
    first = fn.body[0] if fn.body else None
    return isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)


def _is_future(stmt) -> bool:
    return isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__"
