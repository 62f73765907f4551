"""Programs built of comprehensions and generator expressions: the same program must give the same frames on
Python 3.11 (comprehensions are functions of their own), 3.12+ (list/set/dict comprehensions inlined, PEP 709) and
either backend. Standard library only."""


def double(x):
    return 2 * x


def prog_list(xs):
    ys = [x * 2 for x in xs]
    return ys


def prog_set_dict(xs):
    s = {x % 3 for x in xs}
    d = {x: double(x) for x in xs if x > 1}
    return s, d


def prog_genexpr(xs):
    total = sum(x * x for x in xs)
    g = (double(x) for x in xs)
    first = next(g)
    return total, first, list(g)


def prog_nested(rows):
    flat = [v for row in rows for v in row]
    grid = [[double(v) for v in row] for row in rows]
    sums = [sum(v for v in row) for row in rows]
    return flat, grid, sums


def prog_multiline(xs):
    pairs = [
        (x, double(x))
        for x in xs
        if x != 2
    ]
    n = len(pairs)
    return pairs, n


def prog_shadow(xs):
    x = "outer"
    ys = [x for x in xs]
    return x, ys


def prog_raises(xs):
    try:
        bad = [10 // x for x in xs]
    except ZeroDivisionError as e:
        bad = str(e)
    return bad


def prog_calls_in_comprehension(xs):
    out = [double(double(x)) for x in xs]
    return out


def prog_loop_and_comp(xs):
    acc = []
    for x in xs:
        acc.append([y for y in range(x)])
    return acc


def prog_lambda_in_comp(xs):
    fs = [lambda v, k=k: v + k for k in xs]
    return [f(1) for f in fs]


PROGRAMS = {
    "list": (prog_list, [1, 2, 3]),
    "set_dict": (prog_set_dict, [1, 2, 3, 4]),
    "genexpr": (prog_genexpr, [1, 2, 3]),
    "nested": (prog_nested, [[1, 2], [3]]),
    "multiline": (prog_multiline, [1, 2, 3]),
    "shadow": (prog_shadow, [1, 2]),
    "raises": (prog_raises, [1, 0, 2]),
    "calls": (prog_calls_in_comprehension, [1, 2]),
    "loop_and_comp": (prog_loop_and_comp, [1, 2]),
    "lambda": (prog_lambda_in_comp, [1, 2]),
}


def main():
    """Print every program's records as JSON (what the cross-interpreter test compares): `python comprehensions.py
    BACKEND [native]`, with the repository root on PYTHONPATH."""
    import json
    import os
    import sys

    from tracer import TraceConfig, trace_call

    backend = sys.argv[1]
    native = len(sys.argv) > 2 and sys.argv[2] == "native"
    here = os.path.dirname(os.path.abspath(__file__))
    out = {}
    for name, (fn, arg) in PROGRAMS.items():
        config = TraceConfig(root=here, backend=backend, depth=2, function_episodes=True,
                             native_comprehensions=native)
        out[name] = [{k: r[k] for k in ("origin", "context", "frames", "outcome", "stats")}
                     for r in trace_call(fn, arg, config=config)]
    json.dump({"python": "%d.%d" % sys.version_info[:2], "records": out}, sys.stdout)


if __name__ == "__main__":
    main()
