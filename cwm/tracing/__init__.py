"""Parent side of the tracer (TEAM protocol): find the units of work, run each in a jailed child, shard the records.

`target` checks the interpreter that will run the traced code, `units` turns a repository (its pytest tests) or a
functions file into units, `child` runs one unit as `python -m tracer run JOB.json` inside `cwm.jail`, and `run`
drives the workers, the shards and the progress display. The command line is `cwm.trace_cli`.
"""
from .target import TraceInputError

__all__ = ["TraceInputError"]
