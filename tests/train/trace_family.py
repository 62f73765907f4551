"""A small family of functions whose traces the learning test trains on (traced by the real tracer)."""


def accumulate(n, step):
    total = 0
    for i in range(n):
        total = total + step
    return total


def add(a, b):
    return a + b


def accumulate_with_helper(n, step):
    total = 0
    for i in range(n):
        total = add(total, step)
    return total
