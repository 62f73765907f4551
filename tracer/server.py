"""`python -m tracer serve JOB.json`: many units in one interpreter that starts, imports and collects once, each
unit in a fork of it.

Starting the interpreter, importing pytest and collecting the test module cost most of a second, and a traced test
mostly far less; forked from a process that has done all that, a unit starts in milliseconds, from the same state a
fresh process would reach (the tests are never run in the server itself). Isolation is the fork's: whatever a
unit does to its memory, files it opens, processes it starts, ends with it.

JOB.json: {"mode", "root", "paths"} (paths: the test files to collect, in pytest mode).
Protocol: one unit per line on stdin (`run`'s JOB.json fields, plus "work" and "home": the unit's working
directory and HOME, and "hard_timeout_s"); one reply per unit on stdout, once every process the unit started is
gone: {"exit": the unit process's exit code (negative: the signal that killed it), "timed_out": killed at
hard_timeout_s}. The project's and pytest's own output goes to stderr.

Every process a unit leaves behind is killed and reaped before the reply, however it detached: the server is the
reaper of all it starts.
"""
import json
import os
import select
import signal
import sys
import tempfile
import time
import traceback

from .runner import run_unit


def serve(job):
    commands = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)       # print() in the project or pytest must not reach the replies
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    private = (commands.fileno(), replies.fileno())
    _adopt_orphans()

    def loop(tests):
        _warm_up()
        for line in commands:
            reply = _run_forked(json.loads(line), tests, private)
            replies.write(json.dumps(reply) + "\n")
            replies.flush()

    if job["mode"] == "pytest":
        from .pytest_plugin import collect_then
        root = os.path.realpath(job["root"])
        collect_then(root, [os.path.join(root, p) for p in job.get("paths") or ()] or [root], loop)
    else:
        loop(None)


def _warm_up():
    """Fill, once here, the caches every fork would fill again for itself:
    - inspect's map from file to module, which `inspect.getsourcelines` (each function episode's context) builds on
      first use by a pass over every module loaded, resolving each one's path: tens of milliseconds a unit, a fifth
      of a one-worker run over toolz's tests;
    - the interpreter's library folders (sysconfig, which imports its data module to answer): 4 ms a unit."""
    import inspect
    from .scope import _library_dirs
    inspect.getmodule(_warm_up.__code__)
    _library_dirs()


def _run_forked(unit, tests, private):
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()         # its own process group, to kill at the end
            for fd in private:
                os.close(fd)
            os.chdir(unit["work"])
            os.environ["HOME"] = os.environ["TMPDIR"] = unit["home"]
            tempfile.tempdir = None
            run_unit(unit, tests)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    status, timed_out = _wait(pid, unit["hard_timeout_s"])
    _kill_leftovers(pid)
    return {"exit": os.waitstatus_to_exitcode(status), "timed_out": timed_out}


def _wait(pid, timeout):
    """The wait status of `pid`, killed with its process group at `timeout`; and whether that happened.

    Woken the moment the unit exits, through a pidfd (Linux 5.3+): polling with a growing pause overslept a 17 ms
    unit by 14 ms, most of what a short test cost. Where there is no pidfd, the polling it replaced."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    pause = 0.0005
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status, False
            left = deadline - time.monotonic()
            if left <= 0:
                _kill_group(pid)
                return os.waitpid(pid, 0)[1], True
            if fd is not None:
                select.select([fd], [], [], left)
            else:
                time.sleep(min(pause, left))
                pause = min(2 * pause, 0.02)
    finally:
        if fd is not None:
            os.close(fd)


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_leftovers(pgid):
    """Kill what the unit left running: its process group, then every child of ours (what it left detached, by
    setsid or a double fork, is ours once its parent dies: `_adopt_orphans`), until none is left; reap them all."""
    _kill_group(pgid)
    children = "/proc/self/task/%d/children" % os.getpid()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return      # none left
        try:
            with open(children) as f:
                pids = f.read().split()
        except OSError:
            pids = ()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.001)


def _adopt_orphans():
    """Make this process the reaper of every process its units start (Linux's PR_SET_CHILD_SUBREAPER): a process
    whose parent died becomes our child, not init's, so `_kill_leftovers` finds it. In the jail's PID namespace the
    server is init, and that holds already."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)     # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass
