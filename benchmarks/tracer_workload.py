"""What benchmarks/test_tracer_speed.py traces: a CPU-bound function suite, and a test-like workload over real
library code (copies of pure-Python standard-library modules, traced as if they were the project's own code).

Plain functions over plain data, written the way solutions and library code are: loops over inputs that stay the
same, accumulators that change, containers that grow, objects with state.
"""


def bubble(xs):
    xs = list(xs)
    n = len(xs)
    for i in range(n):
        for j in range(n - i - 1):
            if xs[j] > xs[j + 1]:
                xs[j], xs[j + 1] = xs[j + 1], xs[j]
    return xs


def word_freq(text):
    counts = {}
    for w in text.split():
        w = w.lower().strip(".,")
        counts[w] = counts.get(w, 0) + 1
    best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return best[:3]


def primes(n):
    sieve = [True] * (n + 1)
    out = []
    for i in range(2, n + 1):
        if sieve[i]:
            out.append(i)
            for k in range(i * i, n + 1, i):
                sieve[k] = False
    return out


def lcs(a, b):
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                dp[i][j] = dp[i - 1][j - 1] + 1
            else:
                dp[i][j] = max(dp[i - 1][j], dp[i][j - 1])
    return dp[-1][-1]


def two_sum(nums, target):
    seen = {}
    for i, v in enumerate(nums):
        want = target - v
        if want in seen:
            return seen[want], i
        seen[v] = i
    return None


def max_subarray(nums):
    best = cur = nums[0]
    start = best_start = best_end = 0
    for i in range(1, len(nums)):
        if cur < 0:
            cur, start = nums[i], i
        else:
            cur += nums[i]
        if cur > best:
            best, best_start, best_end = cur, start, i
    return best, nums[best_start:best_end + 1]


class Account:
    def __init__(self, owner):
        self.owner = owner
        self.history = []

    def deposit(self, amount):
        self.history.append(amount)
        return len(self.history)


def bank(n):
    acc = Account("ann")
    count = 0
    for i in range(n):
        count = acc.deposit(i)
    return count, acc.history[-1]


def function_calls():
    """The calls of the CPU-bound function suite: [(function, arguments)]."""
    data = [(i * 7919) % 211 for i in range(300)]
    return [
        (bubble, (data[:30],)),
        (word_freq, ("The cat and the hat. And the bat, the mat. " * 15,)),
        (primes, (400,)),
        (lcs, ("ACGTACGTTGCAGT", "TGCATGCAACGTAC")),
        (two_sum, (data, 400)),
        (max_subarray, ([v - 105 for v in data],)),
        (bank, (60,)),
    ]


def function_suite():
    return [fn(*args) for fn, args in function_calls()]


def library_suite(difflib, textwrap, fractions, shlex):
    """Calls like the standard library's own tests make, into copies of those modules."""
    a = ["line %d\n" % i for i in range(40)]
    b = list(a)
    b[5] = "changed\n"
    del b[20:23]
    b.insert(30, "new\n")
    diff = list(difflib.unified_diff(a, b, "a", "b", n=1))
    ratio = difflib.SequenceMatcher(None, "tracing the tracer", "tracing a tracer").ratio()
    wrapped = textwrap.fill("The quick brown fox jumps over the lazy dog. " * 6, width=30)
    dedented = textwrap.dedent("    a\n      b\n    c\n")
    total = sum(fractions.Fraction(1, d) for d in range(1, 12))
    words = shlex.split("cwm-trace 'my project' --depth 2 -o \"out dir\" --python=/usr/bin/python3")
    return len(diff), round(ratio, 3), wrapped.count("\n"), dedented, str(total), words


def prefix_queries(values, queries):
    prefix = [0]
    for v in values:
        prefix.append(prefix[-1] + v)
    answers = []
    for lo, hi in queries:
        answers.append(prefix[hi] - prefix[lo])
    return answers


def longest_unique_run(text):
    last = {}
    start = best = 0
    for i, ch in enumerate(text):
        if last.get(ch, -1) >= start:
            start = last[ch] + 1
        last[ch] = i
        best = max(best, i - start + 1)
    return best


def pair_count(sorted_values, target):
    lo, hi = 0, len(sorted_values) - 1
    count = 0
    while lo < hi:
        s = sorted_values[lo] + sorted_values[hi]
        if s <= target:
            count += hi - lo
            lo += 1
        else:
            hi -= 1
    return count


def contest_suite():
    """Solutions run on contest-sized inputs: big inputs that stay the same while small variables change."""
    values = [(i * 7919) % 1009 for i in range(2000)]
    queries = [(i, i + 50) for i in range(0, 300, 3)]
    text = "".join(chr(97 + (i * i) % 26) for i in range(300))
    return [
        prefix_queries(values[:400], queries),
        longest_unique_run(text),
        pair_count(sorted(values[:500]), 1000),
    ]
