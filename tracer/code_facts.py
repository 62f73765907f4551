"""Facts about one code object, computed once with `dis` and cached: where it lives, its `def` line, and which of
its lines are *inert*.

A line is inert when its bytecode cannot run any other Python code and cannot change any object: it only moves
values between the stack, local variables and constants (LOAD_FAST, LOAD_CONST, STORE_FAST, COPY, SWAP, POP_TOP of
values it pushed itself, plain jumps, returns). After an inert line, a local it did not store is still the same
object in the same state, so its previous repr is still right: the recorder skips re-serialising it.
What an inert line stores is recorded too; the recorder checks at run time that the values it overwrote were
atomic (an overwritten list could be the last reference to an object whose `__del__` runs code).

Instructions without a line number are exception-handler code in every CPython this supports; they run only after
an exception event in the same frame, which makes the recorder distrust the line anyway, so they are ignored here.
"""
import dis
import linecache
import sys
import weakref

CO_OPTIMIZED = 0x0001

# opcode name -> (values popped, values pushed, stack depth it needs to be there already). Only these are inert.
_INERT = {
    "NOP": (0, 0, 0), "NOT_TAKEN": (0, 0, 0), "EXTENDED_ARG": (0, 0, 0), "CACHE": (0, 0, 0),
    "JUMP_FORWARD": (0, 0, 0), "COPY_FREE_VARS": (0, 0, 0),
    "LOAD_FAST": (0, 1, 0), "LOAD_FAST_CHECK": (0, 1, 0), "LOAD_FAST_AND_CLEAR": (0, 1, 0), "LOAD_CONST": (0, 1, 0),
    "LOAD_SMALL_INT": (0, 1, 0), "LOAD_DEREF": (0, 1, 0), "LOAD_CLOSURE": (0, 1, 0), "PUSH_NULL": (0, 1, 0),
    "LOAD_FAST_LOAD_FAST": (0, 2, 0),
    "STORE_FAST": (1, 0, 0), "STORE_DEREF": (1, 0, 0), "DELETE_FAST": (0, 0, 0), "DELETE_DEREF": (0, 0, 0),
    "STORE_FAST_STORE_FAST": (2, 0, 0), "STORE_FAST_LOAD_FAST": (1, 1, 0),
    "POP_TOP": (1, 0, 0), "DUP_TOP": (0, 1, 1), "ROT_TWO": (0, 0, 2), "ROT_THREE": (0, 0, 3), "ROT_FOUR": (0, 0, 4),
    "COPY": (0, 1, None), "SWAP": (0, 0, None),
    "POP_JUMP_IF_NONE": (1, 0, 0), "POP_JUMP_IF_NOT_NONE": (1, 0, 0),
    "POP_JUMP_FORWARD_IF_NONE": (1, 0, 0), "POP_JUMP_FORWARD_IF_NOT_NONE": (1, 0, 0),
    "RETURN_VALUE": (1, 0, 0), "RETURN_CONST": (0, 0, 0),
}
if sys.version_info >= (3, 13):  # a conditional jump's operand is an exact bool from 3.13 on (TO_BOOL is separate)
    _INERT.update({"POP_JUMP_IF_TRUE": (1, 0, 0), "POP_JUMP_IF_FALSE": (1, 0, 0)})
_STORES = frozenset({"STORE_FAST", "STORE_DEREF", "DELETE_FAST", "DELETE_DEREF", "STORE_FAST_STORE_FAST",
                     "STORE_FAST_LOAD_FAST", "LOAD_FAST_AND_CLEAR"})


def _line_of(instr, current):
    positions = getattr(instr, "positions", None)
    if positions is not None:
        return positions.lineno
    starts = instr.starts_line
    return starts if starts is not None else current


def inert_lines(code):
    """{line: frozenset(names it stores or deletes)} for the inert lines of `code`."""
    ops = {}
    line = None
    for instr in dis.get_instructions(code):
        line = _line_of(instr, line)
        if line is not None:
            ops.setdefault(line, []).append(instr)
    facts = {}
    for line, instrs in ops.items():
        depth, stores = 0, set()
        for instr in instrs:
            effect = _INERT.get(instr.opname)
            if effect is None:
                break
            pops, pushes, needs = effect
            if needs is None:
                needs = instr.arg
            if depth < max(pops, needs):  # it would consume or touch a value an earlier line left on the stack
                break
            depth += pushes - pops
            if instr.opname in _STORES:
                names = instr.argval if isinstance(instr.argval, tuple) else (instr.argval,)
                if instr.opname == "STORE_FAST_LOAD_FAST":
                    names = names[:1]
                stores.update(n for n in names if isinstance(n, str))
        else:
            facts[line] = frozenset(stores)
    return facts


def _def_line(code):
    """The line of the `def`/`class` itself: co_firstlineno points at the first decorator."""
    first = code.co_firstlineno
    if code.co_name.startswith("<"):
        return first
    for line in range(first, first + 50):
        text = linecache.getline(code.co_filename, line).lstrip()
        if not text:
            break
        if text.startswith(("def ", "async def ", "class ")):
            return line
    return first


_QUALNAMES = {}
_INERT_FACTS = weakref.WeakKeyDictionary()   # code -> inert_lines(code): dis is slow, code objects are shared
_CONTEXTS = weakref.WeakKeyDictionary()       # code -> (source lines, def line index): inspect is slow too


def _qualname_from_source(code):
    """co_qualname exists from 3.11 on; before, read it off the source's syntax tree (once per file)."""
    table = _QUALNAMES.get(code.co_filename)
    if table is None:
        import ast
        table = _QUALNAMES[code.co_filename] = {}
        try:
            tree = ast.parse("".join(linecache.getlines(code.co_filename)))
        except (SyntaxError, ValueError):
            tree = None

        def visit(node, prefix):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = prefix + child.name
                    for line in [child.lineno] + [d.lineno for d in child.decorator_list]:
                        table[(line, child.name)] = name
                    inner = name + "." if isinstance(child, ast.ClassDef) else name + ".<locals>."
                    visit(child, inner)
                else:
                    visit(child, prefix)

        if tree is not None:
            visit(tree, "")
    return table.get((code.co_firstlineno, code.co_name), code.co_name)


class CodeInfo:
    """Everything the recorder needs to know about one traced code object, computed on first use."""
    __slots__ = ("code", "path", "filename", "qualname", "def_line", "is_function", "_inert", "sources", "_lines",
                 "_context")

    def __init__(self, code, path):
        self.code = code
        self.path = path
        self.filename = code.co_filename
        self.qualname = getattr(code, "co_qualname", None) or _qualname_from_source(code)
        self.def_line = _def_line(code)
        # A function-level episode makes sense for a real function, not a lambda, comprehension or class body.
        self.is_function = bool(code.co_flags & CO_OPTIMIZED) and not code.co_name.startswith("<")
        self._inert = None
        self.sources = {}     # line -> its text, filled by `source`
        self._lines = None
        self._context = None

    @property
    def inert(self):
        if self._inert is None:
            facts = _INERT_FACTS.get(self.code)
            if facts is None:
                facts = _INERT_FACTS[self.code] = inert_lines(self.code)
            self._inert = facts
        return self._inert

    def source(self, line):
        try:
            return self.sources[line]
        except KeyError:
            text = self.sources[line] = linecache.getline(self.filename, line).rstrip("\r\n")
            return text

    def line_at(self, offset):
        """The line of the instruction at byte `offset` (for sys.monitoring's JUMP events)."""
        if self._lines is None:
            table = {}
            for start, end, line in self.code.co_lines():
                for o in range(start, end, 2):
                    table[o] = line
            self._lines = table
        return self._lines.get(offset)

    def context(self, marker):
        """The function's own source (decorators included) with `marker` on its def line: its episode's context."""
        if self._context is None:
            found = _CONTEXTS.get(self.code)
            if found is None:
                import inspect
                try:
                    lines, first = inspect.getsourcelines(self.code)
                except (OSError, TypeError):
                    lines, first = [self.source(self.def_line)], self.def_line
                found = _CONTEXTS[self.code] = ([line.rstrip("\r\n") for line in lines], self.def_line - max(first, 1))
            lines, index = found
            if 0 <= index < len(lines):
                lines = lines[:index] + [lines[index] + marker] + lines[index + 1:]
            self._context = "\n".join(lines)
        return self._context
