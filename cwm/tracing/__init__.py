"""Parent side of the tracer: find the units of work, run each in a jailed child, shard the records.

`target` checks the interpreter that will run the traced code, `units` turns a repository (its pytest tests) or a
functions file into units, `child` runs units in jailed `python -m tracer serve` processes (one per worker, each
unit in a fork of it), and `run` drives the workers, the shards and the progress display. The command line is `cwm.trace_cli`.
"""
from .target import TraceInputError

__all__ = ["TraceInputError"]
