"""Interpreter hooks -> Recorder calls. Two backends, one output.

`MonitoringBackend` (sys.monitoring, PEP 669, 3.12+): PY_START is the only event on everywhere; for code outside the
scope its handler returns DISABLE, so that code runs at full speed from then on. For code in scope it switches on
local events (LINE, JUMP, PY_RESUME, PY_RETURN, PY_YIELD, STOP_ITERATION) for that code object only. RAISE,
PY_THROW and PY_UNWIND cannot be local: their handlers return at once for code out of scope.

`SettraceBackend` (sys.settrace, every version): the global trace function returns None for frames out of scope.

The mapping is the one CPython's own settrace emulation uses on 3.12+ (Python/legacy_tracing.c), so both backends
see the same events: call <- PY_START/PY_RESUME/PY_THROW; line <- LINE, and a backward JUMP within one line;
exception <- RAISE/STOP_ITERATION; return <- PY_RETURN/PY_YIELD; PY_UNWIND ends a scope without a frame (its
`exception` frame was already written). Only the thread that started tracing is traced (settrace is per thread).

A handler never lets an error of the tracer reach the traced program: on an internal error tracing stops and the
open traces are closed with outcome "crashed".
"""
import opcode
import sys
import threading

from .code_facts import CodeInfo

HAS_MONITORING = hasattr(sys, "monitoring")

_RETURN_OPS = frozenset(opcode.opmap[n] for n in ("RETURN_VALUE", "RETURN_CONST") if n in opcode.opmap)
_YIELD_VALUE = opcode.opmap["YIELD_VALUE"]
_YIELD_FROM = opcode.opmap.get("YIELD_FROM", -1)
_RESUME = opcode.opmap.get("RESUME", -1)


def choose(name="auto"):
    """The backend class for `name` ("auto": sys.monitoring where the interpreter has it)."""
    if name == "auto":
        name = "monitoring" if HAS_MONITORING else "settrace"
    if name == "monitoring":
        if not HAS_MONITORING:
            raise ValueError(f"backend 'monitoring' needs Python 3.12+, this is {sys.version.split()[0]}; "
                             "use backend 'settrace'")
        return MonitoringBackend
    if name == "settrace":
        return SettraceBackend
    raise ValueError(f"unknown tracer backend {name!r}: use 'monitoring', 'settrace' or 'auto'")


class _Backend:
    name = ""

    def __init__(self, scope):
        self.scope = scope
        self.rec = None
        self.infos = {}     # code -> CodeInfo, or False when out of scope
        self.failed = None

    def info(self, code):
        info = self.infos.get(code)
        if info is None:
            path = self.scope.path_of(code.co_filename)
            # Module bodies are not scopes worth a trace (their locals are the module's globals).
            info = CodeInfo(code, path) if path is not None and code.co_name != "<module>" else False
            self.infos[code] = info
        return info

    def _internal_error(self, exc):
        """Stop tracing without disturbing the program; the open traces end as "crashed"."""
        self.failed = exc
        self.stop()
        rec = self.rec
        if rec is not None:
            try:
                rec.finish_all("crashed")
            except Exception:
                pass


class SettraceBackend(_Backend):
    name = "settrace"

    def __init__(self, scope):
        super().__init__(scope)
        self.codes = {}     # code -> co_code (3.12+ builds a new bytes object on every access)
        self.pending = set()  # ids of scopes with an exception event since their last line event

    def start(self, rec):
        self.rec = rec
        self._old = sys.gettrace()
        rec.own_trace = self._global     # one bound method object: sys.gettrace() gives this one back
        sys.settrace(rec.own_trace)

    def stop(self):
        sys.settrace(self._old)
        self.rec.own_trace = None   # it ties the recorder to this backend in a cycle: a stopped session is freed at once

    def _global(self, frame, event, arg):
        if event != "call":
            return None
        code = frame.f_code
        info = self.infos.get(code)
        if info is None:
            info = self.info(code)
        if info is False:
            self.rec.last_line_scope = None     # Python code ran: no line of the caller ran alone
            return None
        try:
            co = self.codes.get(code)
            if co is None:
                co = self.codes[code] = code.co_code
            lasti = frame.f_lasti
            resumed = lasti >= 0 and not (co[lasti] == _RESUME and co[lasti + 1] == 0)
            scope = self.rec.enter(frame, info, resumed)
            frame.f_trace_lines = bool(scope.eps) and not scope.hidden
        except Exception as e:
            self._internal_error(e)
            return None
        return self._local

    def _local(self, frame, event, arg):
        rec = self.rec
        stack = rec.stack
        try:
            if not stack or stack[-1].frame is not frame:
                return None
            scope = stack[-1]
            if event == "line":
                if self.pending:
                    self.pending.discard(id(scope))
                rec.line(scope, frame.f_lineno)
            elif event == "exception":
                self.pending.add(id(scope))
                rec.exception(scope, frame.f_lineno, arg[1] if arg[1] is not None else arg[0])
            elif event == "return":
                rec.leave(scope, self._how(frame, scope), arg, frame.f_lineno)
                self.pending.discard(id(scope))
        except Exception as e:
            self._internal_error(e)
            return None
        return self._local

    def _how(self, frame, scope):
        """settrace says "return" for a return, a yield and an exception leaving the frame: tell them apart."""
        co = self.codes[frame.f_code]
        lasti = frame.f_lasti
        op = co[lasti]
        if op in _RETURN_OPS:
            return "return"
        if id(scope) in self.pending:
            return "unwind"
        if op == _YIELD_VALUE or op == _YIELD_FROM or (op == _RESUME and co[lasti + 1] != 0):
            return "yield"
        if lasti + 2 < len(co) and co[lasti + 2] == _YIELD_FROM:  # 3.9/3.10: lasti rewound before YIELD_FROM
            return "yield"
        return "unwind"


class MonitoringBackend(_Backend):
    name = "monitoring"

    def start(self, rec):
        self.rec = rec
        self.tid = threading.get_ident()
        mon = sys.monitoring
        E = mon.events
        for tool in (4, 3, mon.PROFILER_ID, 5, mon.COVERAGE_ID, mon.DEBUGGER_ID):  # unassigned ids first
            try:
                mon.use_tool_id(tool, "cwm-tracer")
            except ValueError:
                continue
            self.tool = tool
            break
        else:
            raise RuntimeError("no free sys.monitoring tool id (coverage, a debugger and profilers hold them all); "
                               "use backend 'settrace'")
        self.DISABLE = mon.DISABLE
        self.local_events = E.LINE | E.JUMP | E.PY_RESUME | E.PY_RETURN | E.PY_YIELD | E.STOP_ITERATION
        handlers = {E.PY_START: self._py_start, E.PY_RESUME: self._py_resume, E.PY_THROW: self._py_throw,
                    E.PY_RETURN: self._py_return, E.PY_YIELD: self._py_yield, E.PY_UNWIND: self._py_unwind,
                    E.RAISE: self._raise, E.STOP_ITERATION: self._raise, E.LINE: self._line, E.JUMP: self._jump}
        self.events = tuple(handlers)   # not the bound methods: they would tie this backend to itself in a cycle
        for event, fn in handlers.items():
            mon.register_callback(self.tool, event, fn)
        self.enabled = set()
        mon.set_events(self.tool, E.PY_START | E.PY_THROW | E.PY_UNWIND | E.RAISE)
        mon.restart_events()

    def stop(self):
        mon = sys.monitoring
        tool = getattr(self, "tool", None)
        if tool is None:
            return
        self.tool = None
        mon.set_events(tool, 0)
        for code in self.enabled:
            mon.set_local_events(tool, code, 0)
        for event in self.events:
            mon.register_callback(tool, event, None)
        mon.free_tool_id(tool)

    # Every handler: other threads are not traced; code out of scope costs one dict lookup.
    def _py_start(self, code, offset):
        info = self.infos.get(code)
        if info is None:
            info = self.info(code)
        if info is False:
            return self.DISABLE
        if threading.get_ident() != self.tid:
            return None
        if code not in self.enabled:
            self.enabled.add(code)
            sys.monitoring.set_local_events(self.tool, code, self.local_events)
        try:
            self.rec.enter(sys._getframe(1), info, False)
        except Exception as e:
            self._internal_error(e)

    def _py_resume(self, code, offset):
        if threading.get_ident() != self.tid:
            return None
        try:
            self.rec.enter(sys._getframe(1), self.infos[code], True)
        except Exception as e:
            self._internal_error(e)

    def _py_throw(self, code, offset, exc):
        info = self.infos.get(code)
        if not info or threading.get_ident() != self.tid:
            return None
        try:
            if code not in self.enabled:
                self.enabled.add(code)
                sys.monitoring.set_local_events(self.tool, code, self.local_events)
            self.rec.enter(sys._getframe(1), info, True)
        except Exception as e:
            self._internal_error(e)

    def _line(self, code, line, get_ident=threading.get_ident):
        if get_ident() != self.tid:
            return None
        rec = self.rec
        stack = rec.stack
        if not stack:
            return None
        scope = stack[-1]
        if scope.info.code is not code:  # a frame of code in scope that started before tracing did
            return None
        if not scope.eps and not rec.stop_requested:   # in no trace (below every episode's depth)
            rec.last_line_scope = None
            return None
        try:
            rec.line(scope, line)
        except Exception as e:
            self._internal_error(e)

    def _jump(self, code, src, dst):
        """settrace reports a backward jump inside one line as a new "line" event: do the same."""
        if dst > src:
            return self.DISABLE
        info = self.infos[code]
        line = info.line_at(dst)
        if line is None or line != info.line_at(src):
            return self.DISABLE
        return self._line(code, line)

    def _top_scope(self, depth):
        """The innermost scope, when its frame is the one `depth` frames up from this call (the event's own frame)
        and this is the traced thread."""
        if threading.get_ident() != self.tid:
            return None
        stack = self.rec.stack
        if stack and stack[-1].frame is sys._getframe(depth):
            return stack[-1]
        return None

    def _leave(self, code, how, value):
        scope = self._top_scope(3)
        if scope is None:
            return None
        try:
            self.rec.leave(scope, how, value, scope.frame.f_lineno)
        except Exception as e:
            self._internal_error(e)

    def _py_return(self, code, offset, value):
        return self._leave(code, "return", value)

    def _py_yield(self, code, offset, value):
        return self._leave(code, "yield", value)

    def _py_unwind(self, code, offset, exc):
        if not self.infos.get(code):
            return None
        return self._leave(code, "unwind", None)

    def _raise(self, code, offset, exc):
        if not self.infos.get(code):
            return None
        scope = self._top_scope(2)
        if scope is None:
            return None
        try:
            self.rec.exception(scope, scope.frame.f_lineno, exc)
        except Exception as e:
            self._internal_error(e)
