"""Line facts of confined lines: which locals' containers a line changes (its targets) and what it puts into them
(its fills), read off the bytecode of every supported interpreter. The recorder trusts a confined line to change
nothing else, and keeps what it knew of a target's unshown elements only when every fill is an atom: a fill
missed here would let it keep that knowledge after a list went in."""
from tracer.code_facts import line_facts


def confined(xs, ys, k, v, d, flag):
    xs.append(ys)
    xs[k] = v
    xs.append([k])
    xs.insert(0, 5)
    d.update(key=v)
    d.setdefault(k, ys)
    del xs[k]
    xs.pop()
    (xs if flag else ys).append(1)
    xs[0].append(1)
    xs.append(len(ys))


EXPECTED = [                    # (targets, fills) line by line; None: not confined, or fills not all known
    ({"xs"}, {"ys"}),
    ({"xs"}, {"k", "v"}),
    ({"xs"}, None),             # a list built on the line
    ({"xs"}, set()),            # constants only
    ({"d"}, {"v"}),             # keyword names are constants
    ({"d"}, {"k", "ys"}),
    ({"xs"}, set()),
    ({"xs"}, set()),
    None,                       # the receiver depends on a jump: not known
    None,                       # the receiver is no local
    ({"xs"}, None),             # a call's result
]


def test_targets_and_fills_of_confined_lines():
    code = confined.__code__
    facts = line_facts(code)
    first = code.co_firstlineno + 1
    for offset, expected in enumerate(EXPECTED):
        line = facts.get(first + offset)
        got = None if line is None else (set(line.targets), None if line.fills is None else set(line.fills))
        assert got == expected, f"line {offset + 1} of `confined`: {got} != {expected}"
