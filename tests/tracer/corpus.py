"""Programs the tracer tests run through every recorder and backend. Each `prog_*` takes no argument.

They are written to stress the `".."` diff: values that change behind the tracer's back (aliases, callees, method
calls, closures, `__del__`), values that look alike, and every kind of scope entry and exit.
"""
import asyncio
import contextlib
import dataclasses
import gc


# ---- loops and aliasing -------------------------------------------------------------------------------------
def prog_loops():
    total = 0
    squares = []
    for i in range(5):
        if i % 2:
            continue
        squares.append(i * i)
        total += i
    n = 3
    while n:
        n -= 1
        if n == 1:
            break
    return total, squares


def prog_aliasing():
    a = [1, 2, 3]
    b = a
    c = {"k": a}
    b.append(4)
    c["k"].append(5)
    nested = [[0], [1]]
    inner = nested[0]
    inner.append(9)
    t = (inner, 1)
    inner.append(10)
    a = a
    d = b
    x = 1
    return a, d, t, x


def _mutate(xs, d):
    xs.append(len(xs))
    d["n"] = d.get("n", 0) + 1


def prog_mutation_in_callee():
    xs = []
    d = {}
    for _ in range(3):
        _mutate(xs, d)
    xs.sort(reverse=True)
    d.update(z=0)
    ys = xs
    ys.clear()
    return xs, d


class Box:
    def __init__(self, v):
        self.v = v

    def bump(self):
        self.v += 1
        return self

    def __repr__(self):
        return f"Box({self.v!r})"


class Plain:
    """Keeps object's default repr: the tracer proves it unchanged from id and type."""

    def __init__(self):
        self.items = []


def prog_methods_and_objects():
    box = Box(1)
    other = box
    other.bump()
    box.bump().bump()
    p = Plain()
    q = p
    p.items.append(1)
    ps = [Plain() for _ in range(3)]
    ps.pop()
    p = Plain()
    return box.v, len(ps), q.items


# ---- calls --------------------------------------------------------------------------------------------------
def _fib(n):
    if n < 2:
        return n
    return _fib(n - 1) + _fib(n - 2)


def _build(n, acc):
    if n == 0:
        return acc
    acc.append(n)
    return _build(n - 1, acc)


def prog_recursion():
    f = _fib(5)
    acc = _build(3, [])
    return f, acc


def _counter():
    count = 0
    seen = []

    def inc(step=1):
        nonlocal count
        count += step
        seen.append(count)
        return count

    return inc, seen


def prog_closures():
    inc, seen = _counter()
    inc()
    inc(2)
    mult = 3
    scale = lambda v: v * mult  # noqa: E731
    out = [scale(x) for x in seen]
    mult = 4
    out.append(scale(1))
    return out


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0

    def moved(self, dx):
        self.x += dx
        return self

    @property
    def norm1(self):
        return abs(self.x) + abs(self.y)


class Shape:
    sides = 0

    def __init__(self, name):
        self.name = name

    def describe(self):
        return f"{self.name}/{self.sides}"


class Square(Shape):
    sides = 4

    def describe(self):
        base = super().describe()
        return base.upper()


def prog_classes():
    Shape.sides = 0
    p = Point(1, 2)
    q = p.moved(3)
    n = q.norm1
    s = Square("sq")
    text = s.describe()
    Shape.sides = 3
    t2 = Shape("x").describe()
    return p, n, text, t2


# ---- generators, comprehensions, async ----------------------------------------------------------------------
def _gen(n):
    total = 0
    for i in range(n):
        got = yield i
        if got:
            total += got
    return total


def _delegate():
    result = yield from _gen(3)
    yield result


def prog_generators():
    g = _gen(4)
    first = next(g)
    second = g.send(10)
    g.close()
    out = list(_delegate())
    evens = list(x for x in range(6) if x % 2 == 0)
    h = _gen(3)
    next(h)
    try:
        h.throw(ValueError("boom"))
    except ValueError as e:
        caught = repr(e)
    return first, second, out, evens, caught


def prog_comprehensions():
    xs = [1, 2, 3, 4]
    sq = [x * x for x in xs]
    d = {x: x % 2 for x in xs}
    s = {x % 3 for x in xs}
    pairs = [(a, b)
             for a in xs
             if a % 2
             for b in range(a)]
    nested = [[y for y in range(x)] for x in xs]
    x = "outer"
    again = [x for x in sq]
    return sq, d, s, pairs, nested, x, again


async def _fetch(i):
    await asyncio.sleep(0)
    return i * 2


async def _main_async(n):
    results = []
    for i in range(n):
        results.append(await _fetch(i))
    gathered = await asyncio.gather(_fetch(10), _fetch(11))
    return results, gathered


def prog_async():
    return asyncio.run(_main_async(3))


# ---- exceptions and with ------------------------------------------------------------------------------------
def _raiser(kind):
    if kind == "key":
        raise KeyError(kind)
    return kind


def prog_exceptions():
    log = []
    try:
        1 / 0
    except ZeroDivisionError as e:
        log.append(type(e).__name__)
    try:
        _raiser("key")
    except KeyError:
        log.append("key")
    finally:
        log.append("finally")
    try:
        try:
            _raiser("key")
        except KeyError:
            raise ValueError("again")
    except ValueError as e:
        log.append(str(e))
    with contextlib.suppress(IndexError):
        [][1]
    for i in range(3):
        try:
            if i == 1:
                raise RuntimeError(i)
        except RuntimeError:
            continue
    return log


class Resource:
    def __init__(self, log):
        self.log = log

    def __enter__(self):
        self.log.append("enter")
        return self

    def __exit__(self, exc_type, exc, tb):
        self.log.append(("exit", exc_type.__name__ if exc_type else None))
        return exc_type is KeyError


def prog_with():
    log = []
    with Resource(log) as r:
        log.append("body")
    with Resource(log):
        raise KeyError("swallowed")
    try:
        with Resource(log):
            raise ValueError("escapes")
    except ValueError:
        pass
    with open(__file__) as fh:
        first = fh.readline()
    return log, r is not None, first[:3]


def prog_raises():
    data = {"a": 1}
    key = "b"
    return data[key]


# ---- values that change behind the tracer's back ------------------------------------------------------------
class Noisy:
    """Its __del__ appends to a list the tracer shows: a plain rebinding line runs code."""

    def __init__(self, sink):
        self.sink = sink

    def __del__(self):
        self.sink.append("deleted")


def prog_del_side_effect():
    sink = []
    obj = Noisy(sink)
    obj = 0
    keep = sink
    n = Noisy(sink)
    del n
    gc.collect()
    return keep


def prog_inert_lines():
    big = list(range(600))
    small = [1, 2]
    alias = small
    x = 1
    y = x
    z = y
    alias.append(3)
    w = z
    big[599] = -1
    big[0] = -1
    v = w
    return small, v, big[:2]


class Shifty:
    """Its repr depends on a class attribute that other code changes."""
    tag = "a"

    def __repr__(self):
        return f"Shifty({Shifty.tag})"


def _retag(t):
    Shifty.tag = t


def _rename(fn, cls, suffix):
    fn.__qualname__ = "_retag" + suffix
    cls.__qualname__ = "Shifty" + suffix


def prog_class_state():
    _retag("a")
    cls = Shifty
    fn = _retag
    _rename(fn, cls, "_renamed")
    s = Shifty()
    t = (s, 1)
    _retag("b")
    u = 1
    _retag("c")
    Plain.__repr__ = lambda self: "Plain!"
    p = Plain()
    q = 2
    del Plain.__repr__
    r = 3
    _rename(fn, cls, "")   # leaves the names as it found them, for the next run
    return s, t, p, u, q, r


def prog_hostile_values():
    class BadRepr:
        def __repr__(self):
            raise RuntimeError("no repr")

    class Deep:
        def __repr__(self):
            return repr(self)

    bad = BadRepr()
    deep = Deep()
    loop = [1]
    loop.append(loop)
    text = "x" * 1000
    quote = "it's" + "y" * 500
    nested = {"a": [1, {"b": (2, 3)}], "c": frozenset({1}), "e": set(), "t": (1,)}
    big = list(range(10_000))
    big.append("end")
    loop.append(2)
    return bad, deep, loop, len(text), quote[:3], nested


def prog_id_reuse():
    out = []
    for i in range(4):
        p = Plain()
        p.items.append(i)
        out.append(len(p.items))
        del p
    s = "a"
    for _ in range(3):
        s = s + "a"
        s = s[:1]
    return out, s


class Counter:
    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1
        return self.n

    def __repr__(self):
        return f"Counter({self.n})"


def prog_sorted_callback():
    data = [3, 1, 2]
    c = Counter()
    keyed = sorted(data, key=lambda v: (c(), -v)[1])
    total = sum(map(lambda v: v * 2, data))
    return keyed, total, c


PROGRAMS = {name[len("prog_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("prog_")}
