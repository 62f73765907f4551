"""cwm-toolkit's execution tracer: line-level traces of Python code in the CWM format (DESIGN.md §1-2).

Standard library only, CPython 3.9-3.13: it is copied into and run by the traced project's own interpreter.
- `trace_call(fn, *args, config=TraceConfig(...), **kwargs)`: trace one call in this process.
- `python -m tracer run JOB.json` / `serve JOB.json`: the child side of `cwm-trace` (tracer/runner.py).
- `tracer.format`: render a record to CWM text and parse it back.
"""
from .recorder import TraceConfig, TraceStopped
from .session import Session, trace_call

__all__ = ["TraceConfig", "TraceStopped", "Session", "trace_call"]
