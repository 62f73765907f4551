"""One tracing session: a scope, a backend and a recorder wired together; and `trace_call`, the in-process API."""
import gc
import hashlib
import inspect
import os
import threading
from _thread import _count as _thread_count

from . import backends, values
from .recorder import Recorder, TraceConfig, TraceStopped
from .scope import Scope


def code_of(fn):
    """The code object a call of `fn` runs (through decorators that set __wrapped__, and bound methods)."""
    target = inspect.unwrap(fn)
    target = getattr(target, "__func__", target)
    code = getattr(target, "__code__", None)
    if code is None:
        raise TypeError(f"{fn!r} is not a Python function: nothing to trace")
    return code


class Session:
    """Traces what runs between `start()` and `stop()` on this thread; finished records go to `emit`."""

    def __init__(self, config, emit, *, entry_code, entry_origin=None, entry_context=None, recorder=Recorder):
        self.config = config
        backend_cls = backends.choose(config.backend)
        self.backend = backend_cls(Scope(config.root, config.include, config.exclude, config.virtual_files))
        self.recorder = recorder(config, emit, backend_name=backend_cls.name, entry_code=entry_code,
                                 entry_origin=entry_origin, entry_context=entry_context)
        self._timer = None

    def start(self, on_timeout=None):
        """Start tracing. After `soft_timeout_s` the open traces are written with outcome "timeout", tracing stops
        and `on_timeout()` runs in the traced thread (default: raise TraceStopped to unwind the program)."""
        rec = self.recorder

        def stop_here():
            self.backend.stop()
            if on_timeout is not None:
                on_timeout()
            else:
                raise TraceStopped()

        rec.on_stop = stop_here
        if self.config.soft_timeout_s:
            self._timer = threading.Timer(self.config.soft_timeout_s, rec.request_stop)
            self._timer.name = "cwm-tracer-timer"
            self._timer.daemon = True
            self._timer.start()
        # The recorder trusts a quiet line only while nothing else can run: count the tracer's own threads (any
        # other, and it trusts none), and every garbage collection (finalizers, gc callbacks: Recorder.gc_last).
        own = [t for t in threading.enumerate() if t.name.startswith("cwm-tracer")]
        rec.threads = len(own) if _thread_count() == len(own) else -1
        gc.callbacks.append(rec.gc_hook)
        values.install_alarm()
        try:
            self.backend.start(rec)
        except RuntimeError:    # every sys.monitoring tool id taken (coverage, a debugger...): settrace still works
            if self.config.backend != "auto":
                raise
            self.backend = backends.SettraceBackend(self.backend.scope)
            rec.backend_name = self.backend.name
            self.backend.start(rec)

    def stop(self):
        self.backend.stop()
        if self.recorder.gc_hook in gc.callbacks:
            gc.callbacks.remove(self.recorder.gc_hook)
        values.uninstall_alarm()
        if self._timer is not None:
            self._timer.cancel()
        # A trace still open here never saw its root scope end (tracing was stopped under it).
        self.recorder.finish_all("crashed")
        # stop_here (start) ties the recorder to this session in a cycle: untied, a finished session and the record
        # it keeps are freed as soon as the caller drops them, not at the next full garbage collection.
        self.recorder.on_stop = None


def trace_call(fn, *args, config=None, recorder=Recorder, **kwargs):
    """Trace `fn(*args, **kwargs)` in this process and return its records: function episodes in the order they
    ended, the entry's last. The call's exception, if any, is not re-raised: the entry record's outcome says "raised".

    `config` defaults to tracing everything under the directory of `fn`'s file.
    """
    code = code_of(fn)
    if config is None:
        config = TraceConfig(root=os.path.dirname(os.path.abspath(code.co_filename)))
    records = []
    # The unit every record of this call shares (the held-out split follows it): the function and its arguments,
    # so two calls of one function are two units, and a call's function episodes go with it.
    arguments = values.StableNumbers().text(values.safe_repr((args, kwargs), 10_000)[0])
    unit = "call:%s:%s" % (getattr(code, "co_qualname", code.co_name),
                           hashlib.sha256(arguments.encode("utf-8", "replace")).hexdigest()[:16])
    session = Session(config, records.append, entry_code=code, recorder=recorder, entry_origin={"unit": unit})
    session.start()
    try:
        fn(*args, **kwargs)
    except TraceStopped:
        pass
    except Exception:
        pass
    finally:
        session.stop()
    entry = session.recorder.entry_record
    return [r for r in records if r is not entry] + ([entry] if entry is not None else [])
