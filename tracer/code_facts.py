"""Facts about one code object, computed once with `dis` and cached: where it lives, its `def` line, and what each
of its lines can do to the values the recorder has shown (`line_facts`).

The change detector (tracer/recorder.py) reuses the text it showed for a local when it can prove the value did not
change while the last line ran. The bytecode says what a line may do:
- *inert*: it only moves values between the stack, local variables and constants (LOAD_FAST, STORE_FAST, COPY,
  plain jumps, returns): no other Python code runs and no object changes.
- *quiet*: besides that it only computes (arithmetic, comparisons, subscripts, building new containers, iterating,
  formatting) and calls pure builtins (`len`, `range`, `max`...) or non-mutating methods of builtin types
  (`str.lower`, `dict.get`...), on values it loaded itself (not ones an earlier line left on the stack). No
  instruction of it mutates an existing object: only Python code it ends up running could (a user `__lt__`, a
  property, a generator), or a name bound to something else than the builtin.
  Which of those is ruled out at run time is the recorder's part: the names the line loads are listed for it.
- *confined*: quiet but for stores into subscripts of, and mutating methods (`append`, `pop`, `update`...) of,
  values loaded straight from locals (its targets, found by following the line's stack: `_operands`). If each holds
  a builtin container of atoms (checked at run time), only those containers changed.
Anything else (an attribute store, a store into something not loaded straight from a local, an in-place operation
that is not on a plain local, a call of anything else, an import, a yield) is neither: the recorder checks every
container it showed again.

Instructions without a line number are exception-handler code in every CPython this supports; they run only after
an exception event in the same frame, which makes the recorder distrust the line anyway, so they are ignored here.
"""
import ast
import builtins
import dis
import linecache
import sys
import types
import weakref

from .values import is_atomic

CO_OPTIMIZED = 0x0001

# Opcodes that only move values between the stack, local variables and constants.
_MOVES = frozenset({
    "NOP", "NOT_TAKEN", "EXTENDED_ARG", "CACHE", "JUMP_FORWARD", "COPY_FREE_VARS",
    "LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_AND_CLEAR", "LOAD_CONST", "LOAD_SMALL_INT", "LOAD_DEREF",
    "LOAD_CLOSURE", "PUSH_NULL", "LOAD_FAST_LOAD_FAST",
    "STORE_FAST", "STORE_DEREF", "DELETE_FAST", "DELETE_DEREF", "STORE_FAST_STORE_FAST", "STORE_FAST_LOAD_FAST",
    "POP_TOP", "DUP_TOP", "ROT_TWO", "ROT_THREE", "ROT_FOUR", "COPY", "SWAP",
    "POP_JUMP_IF_NONE", "POP_JUMP_IF_NOT_NONE", "POP_JUMP_FORWARD_IF_NONE", "POP_JUMP_FORWARD_IF_NOT_NONE",
    "RETURN_VALUE", "RETURN_CONST",
})
_STORES = frozenset({"STORE_FAST", "STORE_DEREF", "DELETE_FAST", "DELETE_DEREF", "STORE_FAST_STORE_FAST",
                     "STORE_FAST_LOAD_FAST", "LOAD_FAST_AND_CLEAR"})
_LOCAL_LOADS = frozenset({"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_DEREF", "LOAD_CLOSURE", "LOAD_FAST_LOAD_FAST",
                          "LOAD_FAST_AND_CLEAR", "STORE_FAST_LOAD_FAST", "LOAD_FAST_BORROW",
                          "LOAD_FAST_BORROW_LOAD_FAST_BORROW"})
# Opcodes of quiet lines beyond the moves: they compute new values, iterate and jump. They can run Python code
# only through the dunder methods of their operands (what the recorder rules out at run time), never mutate an
# object by themselves (LIST_APPEND and friends fill the new container a comprehension or display is building).
_QUIET = frozenset({
    "BINARY_OP", "COMPARE_OP", "IS_OP", "CONTAINS_OP", "BINARY_SUBSCR", "BINARY_SLICE", "TO_BOOL",
    "UNARY_NEGATIVE", "UNARY_POSITIVE", "UNARY_INVERT", "UNARY_NOT",
    "BINARY_ADD", "BINARY_SUBTRACT", "BINARY_MULTIPLY", "BINARY_TRUE_DIVIDE", "BINARY_FLOOR_DIVIDE",
    "BINARY_MODULO", "BINARY_POWER", "BINARY_LSHIFT", "BINARY_RSHIFT", "BINARY_AND", "BINARY_OR", "BINARY_XOR",
    "BINARY_MATRIX_MULTIPLY",
    "BUILD_TUPLE", "BUILD_LIST", "BUILD_SET", "BUILD_MAP", "BUILD_CONST_KEY_MAP", "BUILD_STRING", "BUILD_SLICE",
    "LIST_APPEND", "SET_ADD", "MAP_ADD", "LIST_EXTEND", "SET_UPDATE", "DICT_UPDATE", "DICT_MERGE", "LIST_TO_TUPLE",
    "FORMAT_VALUE", "FORMAT_SIMPLE", "FORMAT_WITH_SPEC", "CONVERT_VALUE",
    "GET_ITER", "FOR_ITER", "END_FOR", "POP_ITER", "UNPACK_SEQUENCE", "UNPACK_EX",
    "POP_JUMP_IF_TRUE", "POP_JUMP_IF_FALSE", "POP_JUMP_FORWARD_IF_TRUE", "POP_JUMP_FORWARD_IF_FALSE",
    "POP_JUMP_BACKWARD_IF_TRUE", "POP_JUMP_BACKWARD_IF_FALSE", "POP_JUMP_BACKWARD_IF_NONE",
    "POP_JUMP_BACKWARD_IF_NOT_NONE", "JUMP_IF_TRUE_OR_POP", "JUMP_IF_FALSE_OR_POP",
    "JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT", "JUMP_ABSOLUTE", "JUMP", "JUMP_NO_INTERRUPT",
    "LOAD_GLOBAL", "LOAD_ATTR", "LOAD_METHOD", "PRECALL", "KW_NAMES", "RESUME",
    "CALL", "CALL_KW", "CALL_FUNCTION", "CALL_METHOD", "CALL_FUNCTION_KW",
})
_CALLS = frozenset({"CALL", "CALL_KW", "CALL_FUNCTION", "CALL_METHOD", "CALL_FUNCTION_KW"})
# How deep into the stack an instruction reaches, where dis.stack_effect's net count does not tell: those that push
# one result take (1 - net) values; these take one whatever they push; these reach down `arg` values (plus what they
# pop). Every other instruction takes (-net). The loop's own end (the iterator the `for` line made) is not counted.
_PUSH_ONE = frozenset({
    "BINARY_OP", "COMPARE_OP", "IS_OP", "CONTAINS_OP", "BINARY_SUBSCR", "BINARY_SLICE", "TO_BOOL", "GET_ITER",
    "UNARY_NEGATIVE", "UNARY_POSITIVE", "UNARY_INVERT", "UNARY_NOT", "LIST_TO_TUPLE",
    "BUILD_TUPLE", "BUILD_LIST", "BUILD_SET", "BUILD_MAP", "BUILD_CONST_KEY_MAP", "BUILD_STRING", "BUILD_SLICE",
    "FORMAT_VALUE", "FORMAT_SIMPLE", "FORMAT_WITH_SPEC", "CONVERT_VALUE",
}) | {n for n in _QUIET if n.startswith("BINARY_")} | _CALLS
_TAKE_ONE = frozenset({"LOAD_ATTR", "LOAD_METHOD", "UNPACK_SEQUENCE", "UNPACK_EX", "FOR_ITER", "STORE_FAST_LOAD_FAST"})
_REACH_ARG = {"COPY": 0, "SWAP": 0, "LIST_APPEND": 1, "SET_ADD": 1, "LIST_EXTEND": 1, "SET_UPDATE": 1,
              "DICT_UPDATE": 1, "DICT_MERGE": 1, "MAP_ADD": 2}
_REACH_FIXED = {"DUP_TOP": 1, "ROT_TWO": 2, "ROT_THREE": 3, "ROT_FOUR": 4}
_LOOP_END = frozenset({"END_FOR", "POP_ITER"})


_LOCAL_PUSH = frozenset({"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_DEREF", "LOAD_FAST_BORROW"})
_LOCAL_PUSH_TWO = frozenset({"LOAD_FAST_LOAD_FAST", "LOAD_FAST_BORROW_LOAD_FAST_BORROW"})
_ATOM_CONST = object()      # on _operands' stack: an atomic constant


def _operands(instrs):
    """What each instruction of a line takes off the stack, bottom first: per value, the name of the local a plain
    load pushed it from (nothing ran in between), _ATOM_CONST for an atomic constant, the LOAD_ATTR/LOAD_METHOD that
    pushed a method, or None.

    None for the whole line when an instruction takes or touches a value an earlier line left on the stack: dropping
    one (`break` pops the loop's iterator: a generator's `finally` may run) or computing with one (the left operand
    of a multi-line expression) may run code that the line's own loads say nothing of. Where paths join (a jump
    target), where a value came from is no longer known."""
    stack, taken = [], []
    arguments = 0       # 3.11 counts a call's arguments off at its PRECALL; they leave the stack at the CALL
    for instr in instrs:
        op = instr.opname
        if instr.is_jump_target:
            stack = [None] * len(stack)
        net = dis.stack_effect(instr.opcode, instr.arg, jump=False)
        if op in _LOOP_END or op == "PRECALL":
            arguments = -net if op == "PRECALL" else 0
            taken.append(())
            continue
        pops, pushes = max(-net, 0), max(net, 0)
        if op in _PUSH_ONE:
            reach = pops = 1 - net + (arguments if op in _CALLS else 0)
            pushes = 1
        elif op in _TAKE_ONE:
            reach = pops = 1
            pushes = net + 1
        elif op in _REACH_ARG:
            reach = instr.arg + _REACH_ARG[op]
        else:
            reach = _REACH_FIXED.get(op, -net)
        if len(stack) < reach:
            return None
        taken.append(stack[len(stack) - pops:])
        del stack[len(stack) - pops:]
        if op in _LOCAL_PUSH:
            stack.append(instr.argval)
        elif op == "LOAD_CONST":
            stack.append(_ATOM_CONST if is_atomic(instr.argval) else None)
        elif op == "LOAD_ATTR" or op == "LOAD_METHOD":
            stack.extend([instr] * pushes)      # a call that takes it calls that method
        elif op in _LOCAL_PUSH_TWO:
            stack.extend(instr.argval)
        elif op == "STORE_FAST_LOAD_FAST":
            stack.append(instr.argval[1])
        elif op == "COPY" or op == "DUP_TOP":
            stack.append(stack[-instr.arg] if op == "COPY" else stack[-1])
        elif op == "SWAP":
            stack[-1], stack[-instr.arg] = stack[-instr.arg], stack[-1]
        elif op in _REACH_FIXED:        # ROT_TWO/THREE/FOUR: the top value goes down n - 1 places
            n = _REACH_FIXED[op]
            stack[-n:] = stack[-1:] + stack[-n:-1]
        else:
            stack.extend([None] * pushes)
    return taken


_INPLACE_OLD = frozenset(n for n in dis.opname if n.startswith("INPLACE_"))   # 3.9/3.10
_NB_INPLACE = range(13, 26)     # BINARY_OP's in-place operations (3.11+): +=, &=, //=, ... ^=

# Builtins that mutate none of their arguments (they may call the arguments' dunders, ruled out at run time).
PURE_BUILTINS = frozenset(id(getattr(builtins, name)) for name in (
    "abs", "all", "any", "ascii", "bin", "bool", "callable", "chr", "dict", "divmod", "enumerate", "filter", "float",
    "format", "frozenset", "hash", "hex", "id", "int", "isinstance", "issubclass", "iter", "len", "list", "map",
    "max", "min", "next", "oct", "ord", "pow", "range", "repr", "reversed", "round", "set", "slice", "sorted", "str",
    "sum", "tuple", "type", "zip"))
# Methods of list, dict and set that change only the container they are called on, and call back into Python only
# through the dunders of its elements and their arguments (all atoms, checked at run time).
_FILLING_METHODS = frozenset({"append", "extend", "insert", "add", "update", "setdefault"})    # put arguments in
_MUTATING_METHODS = _FILLING_METHODS | {"pop", "remove", "clear", "reverse", "discard", "popitem"}
# Methods of builtin types that mutate nothing (str, bytes, int and float have no mutating method at all).
_PURE_METHODS = frozenset(
    {n for t in (str, bytes, int, float, tuple, frozenset) for n in dir(t) if not n.startswith("_")}
    | {"get", "keys", "values", "items", "copy", "index", "count", "union", "intersection", "difference",
       "symmetric_difference", "issubset", "issuperset", "isdisjoint"})


class LineFacts:
    """What one quiet line does, for the recorder's run-time checks (see the module docstring).

    stores: local names it stores or deletes. loads: local names it reads. globals: global names
    it reads (each must turn out to be a pure builtin or an atomic constant). calls: how many calls it makes.
    pure_methods: how many pure-method loads it has: with the pure builtins among `globals`, every call's callee
    must be one of them. inplace: locals an in-place operator rebinds (each must hold an atomic value before).
    iterates: it advances an iterator made on an earlier pass of a `for` line from names the loop body may rebind
    (or cells a nested function rebinds, or free variables): what the names hold now may not be what the iterator
    came from.
    rereads: it reads a local it has just stored (a walrus, two statements on one line), whose kind the last
    snapshot does not know.
    targets: locals whose container the line changes, by a subscript store or delete (`xs[i] = v`) or a method of
    the container's own (`xs.append(v)`), each loaded right before (a *confined* line; none for a quiet one). At run
    time each must hold a builtin container of atoms.
    fills: what the line puts into its targets (keys, values, arguments of filling methods): the locals it reads
    them from (the line's atomic constants need no check), or None when some value is computed on the line.
    """
    __slots__ = ("stores", "loads", "globals", "calls", "pure_methods", "inplace", "iterates", "rereads", "targets",
                 "fills")

    def __init__(self, stores, loads, globals_, calls, pure_methods, inplace, iterates, rereads, targets, fills):
        self.stores, self.loads, self.globals = stores, loads, globals_
        self.calls, self.pure_methods, self.inplace = calls, pure_methods, inplace
        self.iterates, self.rereads, self.targets, self.fills = iterates, rereads, targets, fills


def _line_of(instr, current):
    positions = getattr(instr, "positions", None)
    if positions is not None:
        return positions.lineno
    starts = instr.starts_line
    return starts if starts is not None else current


def _names(instr):
    argval = instr.argval
    return argval if isinstance(argval, tuple) else (argval,)


def _quiet_facts(instrs, loop_stores):
    """LineFacts of a line, or None when it is neither quiet nor confined. loop_stores: {offset of a FOR_ITER: the
    names its loop body stores, with the cells nested functions store and the free variables}."""
    taken = _operands(instrs)
    if taken is None:
        return None
    stores, loads, globals_, inplace, targets, fills = set(), set(), set(), set(), set(), []
    calls = pure_methods = 0
    iterates = rereads = False
    for k, instr in enumerate(instrs):
        op = instr.opname
        if op == "STORE_FAST_LOAD_FAST":    # 3.13: the store comes first
            stored, loaded = instr.argval
            stores.add(stored)
            rereads = rereads or loaded in stores
            loads.add(loaded)
        elif op in _LOCAL_LOADS or op in _STORES:
            names = [n for n in _names(instr) if isinstance(n, str)]
            if op in _LOCAL_LOADS:
                rereads = rereads or not stores.isdisjoint(names)
                loads.update(names)
            if op in _STORES:
                stores.update(names)
        elif op in _MOVES:
            continue
        elif op == "STORE_SUBSCR" or op == "DELETE_SUBSCR":
            operands = taken[k]
            container = operands[-2]
            if not isinstance(container, str):
                return None
            targets.add(container)
            if op == "STORE_SUBSCR":
                fills += operands[0], operands[2]   # the value, and the key (a dict's)
        elif op not in _QUIET and op not in _INPLACE_OLD:
            return None
        elif op == "LOAD_GLOBAL":
            globals_.add(instr.argval)
        elif op == "LOAD_ATTR" or op == "LOAD_METHOD":
            receiver = taken[k][-1]
            if instr.argval in _MUTATING_METHODS and isinstance(receiver, str):
                targets.add(receiver)
            elif instr.argval not in _PURE_METHODS:
                return None
            pure_methods += 1
        elif op in _CALLS:
            calls += 1
            operands = taken[k]
            methods = [j for j, item in enumerate(operands) if isinstance(item, dis.Instruction)]
            if methods and operands[methods[-1]].argval in _FILLING_METHODS:
                fills += operands[methods[-1] + 1:]
        elif op == "FOR_ITER":
            iterates = iterates or instr.offset in loop_stores and not loop_stores[instr.offset].isdisjoint(loads)
        elif op in _INPLACE_OLD or (op == "BINARY_OP" and instr.arg in _NB_INPLACE):
            # In place on a plain local (`n += 1`: stored right back), which must hold an atom (checked at run time).
            after = instrs[k + 1] if k + 1 < len(instrs) else None
            if after is None or after.opname not in ("STORE_FAST", "STORE_DEREF"):
                return None
            inplace.add(after.argval)
    if all(isinstance(item, str) or item is _ATOM_CONST for item in fills):
        fills = tuple({item for item in fills if item is not _ATOM_CONST})
    else:
        fills = None
    return LineFacts(frozenset(stores), tuple(loads), tuple(globals_), calls, pure_methods, tuple(inplace), iterates,
                     rereads, tuple(targets), fills)


def line_facts(code):
    """{line: LineFacts} for the quiet lines of `code`."""
    ops = {}
    line = None
    every = list(dis.get_instructions(code))
    for instr in every:
        line = _line_of(instr, line)
        if line is not None:
            ops.setdefault(line, []).append(instr)
    cells = set(code.co_freevars) | _cells_nested_code_stores(code)
    loop_stores = {}
    for instr in every:
        if instr.opname == "FOR_ITER":
            loop_stores[instr.offset] = cells | {n for i in every if instr.offset < i.offset < instr.argval
                                                 and i.opname in _STORES for n in _names(i) if isinstance(n, str)}
    facts = {}
    for line, instrs in ops.items():
        found = _quiet_facts(instrs, loop_stores)
        if found is not None:
            facts[line] = found
    return facts


def _cells_nested_code_stores(code):
    """The cell variables of `code` that a function nested in it may rebind (`nonlocal`): any STORE_DEREF or
    DELETE_DEREF of the name, at any depth (a nested function's own cell of the same name counts too). A cell
    that only this code stores is rebound where its own bytecode says; a free variable can be rebound by code
    elsewhere (the enclosing function, its other closures), so line_facts counts all of those."""
    stored = set()
    todo = [c for c in code.co_consts if isinstance(c, types.CodeType)]
    while todo:
        inner = todo.pop()
        stored.update(i.argval for i in dis.get_instructions(inner) if i.opname in ("STORE_DEREF", "DELETE_DEREF"))
        todo.extend(c for c in inner.co_consts if isinstance(c, types.CodeType))
    return stored & set(code.co_cellvars)


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
_LINE_FACTS = weakref.WeakKeyDictionary()    # code -> line_facts(code): dis is slow, code objects are shared
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


# Code objects of list/set/dict comprehensions: functions of their own before 3.12, inlined from 3.12 on (PEP 709).
COMPREHENSION_NAMES = frozenset({"<listcomp>", "<setcomp>", "<dictcomp>"})
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp)
_COMP_LINES = {}


def comprehension_lines(filename):
    """{line: first line of its statement} for the lines of every statement (a compound statement's header only)
    that holds a list, set or dict comprehension, in the file's source; computed once per file.

    The canonical comprehension form (tracer/recorder.py) shows such a statement as one `line` frame at its first
    line, whatever the interpreter: where its comprehension runs, 3.11 reports a nested scope and 3.12/3.13 the
    enclosing scope's lines in an order of their own (which differs between 3.12 and 3.13)."""
    found = _COMP_LINES.get(filename)
    if found is not None:
        return found
    found = _COMP_LINES[filename] = {}
    try:
        tree = ast.parse("".join(linecache.getlines(filename)))
    except (SyntaxError, ValueError):
        return found

    def header_end(stmt):
        """The last line of a statement's own text: a compound statement's header ends where its body starts."""
        first_child = min((getattr(child, "lineno", 10 ** 9) for field in ("body", "orelse", "handlers", "finalbody")
                           for child in (getattr(stmt, field, None) or ())), default=None)
        end = getattr(stmt, "end_lineno", None) or stmt.lineno
        if first_child is not None and first_child != 10 ** 9:
            end = min(end, max(stmt.lineno, first_child - 1))
        return end

    def visit(node, stmt):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                visit(child, child)
                continue
            if isinstance(child, _COMPREHENSIONS) and stmt is not None:
                for line in range(stmt.lineno, header_end(stmt) + 1):
                    found.setdefault(line, stmt.lineno)
            visit(child, stmt)

    visit(tree, None)
    return found


class CodeInfo:
    """Everything the recorder needs to know about one traced code object, computed on first use."""
    __slots__ = ("code", "path", "filename", "qualname", "def_line", "is_function", "_facts", "places", "layouts",
                 "_lines", "_context", "comprehension", "comp_lines")

    def __init__(self, code, path):
        self.code = code
        self.path = path
        self.filename = code.co_filename
        self.qualname = getattr(code, "co_qualname", None) or _qualname_from_source(code)
        self.def_line = _def_line(code)
        # A function-level episode makes sense for a real function, not a lambda, comprehension or class body.
        self.is_function = bool(code.co_flags & CO_OPTIMIZED) and not code.co_name.startswith("<")
        self._facts = None
        self.places = {}      # line -> (path, line, its text): a frame's place, filled by `place`
        self.layouts = {}     # f_locals names, in order -> what the recorder makes of them (recorder._layout_shape)
        self._lines = None
        self._context = None
        # A comprehension's own scope (before 3.12): in the canonical form it shows no frames, its callees count as
        # the enclosing scope's. comp_lines: comprehension_lines of the file.
        self.comprehension = code.co_name in COMPREHENSION_NAMES
        self.comp_lines = comprehension_lines(code.co_filename)

    @property
    def facts(self):
        """{line: LineFacts} of the quiet lines."""
        if self._facts is None:
            facts = _LINE_FACTS.get(self.code)
            if facts is None:
                facts = _LINE_FACTS[self.code] = line_facts(self.code)
            self._facts = facts
        return self._facts

    def place(self, line):
        """(path, line, source text): one tuple per line, shared by every frame of it (record ids key on it)."""
        try:
            return self.places[line]
        except KeyError:
            place = self.places[line] = (self.path, line, linecache.getline(self.filename, line).rstrip("\r\n"))
            return place

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
                    lines, first = [self.place(self.def_line)[2]], self.def_line
                found = _CONTEXTS[self.code] = ([line.rstrip("\r\n") for line in lines], self.def_line - max(first, 1))
            lines, index = found
            if 0 <= index < len(lines):
                lines = lines[:index] + [lines[index] + marker] + lines[index + 1:]
            self._context = "\n".join(lines) + "\n"   # ends as the source does: with its newline
        return self._context
