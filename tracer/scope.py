"""Which code is traced: files under the project root, minus the standard library, site-packages and the tracer.

Decided once per file name (the backends cache the answer per code object), so the hot path never sees a path.
"""
import fnmatch
import os
import sysconfig

_TRACER_DIR = os.path.dirname(os.path.abspath(__file__))


def _library_dirs():
    """The interpreter's library folders (sysconfig is slow to ask, and they do not change: asked once)."""
    global _LIBS
    if _LIBS is None:
        _LIBS = _find_library_dirs()
    return _LIBS


_LIBS = None


def _find_library_dirs():
    dirs = set()
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            dirs.add(os.path.realpath(path))
    return tuple(sorted(dirs))


class Scope:
    """`path_of(filename)` is the path frames show (relative to root, posix) or None when the file is not traced.

    `virtual` names code that has no file but belongs to the project (function mode's `<input>`).
    """

    def __init__(self, root, include=(), exclude=(), virtual=()):
        self.root = os.path.realpath(root)
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.virtual = frozenset(virtual)
        self._libs = _library_dirs()
        self._cache = {}

    def path_of(self, filename):
        try:
            return self._cache[filename]
        except KeyError:
            path = self._cache[filename] = self._decide(filename)
            return path

    def _decide(self, filename):
        if filename in self.virtual:
            return filename
        if not filename or filename.startswith("<"):
            return None
        real = os.path.realpath(filename)
        if not (real == self.root or real.startswith(self.root.rstrip(os.sep) + os.sep)):
            return None
        parts = real.split(os.sep)
        if "site-packages" in parts or "dist-packages" in parts:
            return None
        if any(real.startswith(lib + os.sep) for lib in self._libs if not self.root.startswith(lib + os.sep)):
            return None
        if real.startswith(_TRACER_DIR + os.sep):
            return None
        rel = os.path.relpath(real, self.root).replace(os.sep, "/")
        if self.include and not any(fnmatch.fnmatch(rel, g) for g in self.include):
            return None
        if any(fnmatch.fnmatch(rel, g) for g in self.exclude):
            return None
        return rel
