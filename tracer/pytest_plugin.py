"""The pytest side of the child: collect a project's tests once, then run the ones asked for, each traced.

`TracedTests` takes over pytest's run loop: once pytest has collected, it hands itself to a `serve` callback, which
picks items from `items` ({nodeid: item}) and runs each through `run` - pytest's own protocol (setup, call,
teardown, reports) with the test function's call traced by a Session. pytest never runs the items by itself.
Imported only in pytest mode: the tracer needs no pytest otherwise.
"""
import linecache

import pytest

from .session import Session, code_of


class TracedTests:
    """The plugin: after collection, `serve(self)` runs the tests it wants through `run`, one at a time."""

    def __init__(self, serve):
        self.serve = serve
        self.served = False
        self.items = {}
        self.unit = None        # (config, origin, out, watchdog, on_timeout) of the test being run
        self.reports = []       # (when, outcome) of the test being run

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        self.items = {item.nodeid: item for item in session.items}
        self.served = True
        self.serve(self)
        return True

    def run(self, item, config, origin, out, watchdog, on_timeout):
        """Run one collected test, its call traced; returns its status: passed | failed | skipped | error."""
        self.unit = (config, origin, out, watchdog, on_timeout)
        self.reports = []
        item.ihook.pytest_runtest_protocol(item=item, nextitem=None)
        return status_of(self.reports)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        config, origin, out, watchdog, on_timeout = self.unit
        try:
            code = code_of(item.obj)
        except (AttributeError, TypeError):
            yield   # not a Python function (a doctest, a YAML item): run it untraced
            return
        session = Session(config, out.record, entry_code=code, entry_origin=origin)
        info = session.backend.info(code)
        if not info:
            yield   # the test itself is outside the traced scope (--include/--exclude): nothing to trace
            return
        source = "".join(linecache.getlines(code.co_filename))
        session.recorder.entry_context = (source, info.def_line - 1)
        watchdog.recorder = session.recorder
        session.start(on_timeout=on_timeout)
        try:
            yield
        finally:
            session.stop()

    def pytest_runtest_logreport(self, report):
        self.reports.append((report.when, report.outcome))


def status_of(reports):
    if not reports or any(when != "call" and outcome == "failed" for when, outcome in reports):
        return "error"
    if any(outcome == "failed" for _, outcome in reports):
        return "failed"
    if any(outcome == "skipped" for _, outcome in reports):
        return "skipped"
    return "passed"


def collect_then(root, paths, serve):
    """Collect the tests in `paths` (pytest's rootdir: `root`), then `serve(tests)` with the TracedTests; when
    pytest stops before its run loop (a conftest that raises, a usage error), `serve` gets no items."""
    tests = TracedTests(serve)
    exit_code = pytest.main(["-q", "-p", "no:cacheprovider", "--rootdir", root, *paths], plugins=[tests])
    if not tests.served:
        print(f"tracer: pytest stopped before running any test (exit code {int(exit_code)})", flush=True)
        tests.served = True
        serve(tests)
