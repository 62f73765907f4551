"""SEARCH/REPLACE edit blocks: the answer format of the single-turn software-engineering environments (SWE-RL's),
shared by the RL rewards and the forager's task generation (which checks that every oracle can be written in it).

A reply may think first (free text, or a `<think>...</think>` section), then gives exactly one answer section:

    <solution>
    ```python
    ### path/to/file.py
    <<<<<<< SEARCH
    lines to find (exactly as in the file, indentation included)
    =======
    lines to put there instead
    >>>>>>> REPLACE
    ```
    </solution>

with one or more such fenced blocks (any fence language), several per file allowed, applied in order. A block
with an empty SEARCH creates a file that does not exist (its REPLACE is the whole content). As in SWE-RL's
released `apply_code_change`, a SEARCH text matches at the start of a line (it is looked up as "\\n" + SEARCH in
"\\n" + file), and every occurrence is replaced.

Malformed — reward -1, whatever the mode: no `<solution>` section or more than one, no edit block in it, a
SEARCH text not found in its file, a SEARCH equal to its REPLACE.

"""
from __future__ import annotations

import difflib
import re

THINK_START, THINK_END = "<think>", "</think>"
ANSWER_START, ANSWER_END = "<solution>", "</solution>"
# SWE-RL's block pattern: a fence, `### PATH`, SEARCH text, `=======`, REPLACE text, the closing fence.
EDIT_BLOCK = re.compile(r"```.*?\n### (.*)\n<<<<<<< SEARCH\n([\s\S]*?)\n=======\n([\s\S]*?)\n>>>>>>> REPLACE\n```")
MALFORMED = -1.0


class MalformedAnswer(ValueError):
    """An answer the reward cannot use (see the module docstring); its reward is -1."""


def extract_answer(output: str) -> str:
    """The text inside the one `<solution>` section, or MalformedAnswer."""
    for tag in (ANSWER_START, ANSWER_END):
        n = output.count(tag)
        if n != 1:
            raise MalformedAnswer(f"expected exactly one {tag}, found {n}")
    start, end = output.index(ANSWER_START) + len(ANSWER_START), output.index(ANSWER_END)
    if end < start:
        raise MalformedAnswer(f"{ANSWER_END} comes before {ANSWER_START}")
    return output[start:end].strip()


def parse_edit_blocks(answer: str) -> dict[str, list[tuple[str, str]]]:
    """path -> [(search, replace), ...] in the order written; MalformedAnswer when there is none."""
    blocks: dict[str, list[tuple[str, str]]] = {}
    for path, search, replace in EDIT_BLOCK.findall(answer):
        blocks.setdefault(path.strip(), []).append((search, replace))
    if not blocks:
        raise MalformedAnswer("no SEARCH/REPLACE edit block in the answer")
    return blocks


def apply_edit_blocks(context: dict[str, str | None], blocks: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """The new content of every file the blocks touch. `context` maps path -> original content (None or absent:
    the file does not exist). MalformedAnswer for a SEARCH not found or equal to its REPLACE."""
    new: dict[str, str] = {}
    for path, edits in blocks.items():
        content = "\n" + (context.get(path) or "")
        for search, replace in edits:
            if search == replace:
                raise MalformedAnswer(f"{path}: a SEARCH text equals its REPLACE text")
            if ("\n" + search) not in content:
                raise MalformedAnswer(f"{path}: SEARCH text not found: {search[:80]!r}")
            content = content.replace("\n" + search, "\n" + replace)
        new[path] = content[1:]
    return new


def format_edit_blocks(blocks: dict[str, list[tuple[str, str]]], *, think: str = "") -> str:
    """A well-formed reply holding `blocks` (the inverse of parse_answer's parsing)."""
    parts = [f"{THINK_START}{think}{THINK_END}\n"] if think else []
    parts.append(ANSWER_START + "\n")
    for path, edits in blocks.items():
        for search, replace in edits:
            parts.append(f"```python\n### {path}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n"
                         f">>>>>>> REPLACE\n```\n")
    parts.append(ANSWER_END)
    return "".join(parts)


def _count_anchored(content: str, search: str) -> int:
    text, needle = "\n" + content, "\n" + search
    n, i = 0, text.find(needle)
    while i != -1:
        n, i = n + 1, text.find(needle, i + 1)
    return n


def minimal_block(old: str, new: str) -> tuple[str, str]:
    """One (search, replace) pair turning `old` into `new` under apply_edit_blocks: the changed lines, widened
    until the search text is non-empty and occurs exactly once. `old` empty: ("", new) creates the file."""
    if not old:
        return "", new
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    ops = [op for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes() if op[0] != "equal"]
    i1, i2, j1, j2 = ops[0][1], ops[-1][2], ops[0][3], ops[-1][4]
    while True:
        search, replace = "".join(a[i1:i2]), "".join(b[j1:j2])
        # a trailing newline on both sides is implied by the block's layout; drop it when both have one
        if search.endswith("\n") and replace.endswith("\n") and i2 < len(a):
            search, replace = search[:-1], replace[:-1]
        if search and _count_anchored(old, search) == 1 and search != replace:
            return search, replace
        if i1 == 0 and i2 == len(a):
            return old, new
        if i1 > 0:
            i1, j1 = i1 - 1, j1 - 1
        if i2 < len(a):
            i2, j2 = i2 + 1, j2 + 1


def oracle_answer(context: dict[str, str | None], new_content: dict[str, str | None]) -> str | None:
    """A reply whose edit blocks turn `context` into `new_content` exactly (one block per changed file), or None
    when the change cannot be written as edit blocks (a text that the block pattern cannot carry)."""
    blocks = {}
    for path, content in new_content.items():
        old, new = context.get(path) or "", content or ""
        if old == new:
            continue
        blocks[path] = [minimal_block(old, new)]
    if not blocks:
        return None
    text = format_edit_blocks(blocks)
    try:
        got = parse_answer(context, text)
    except MalformedAnswer:
        return None
    want = {p: (c or "") for p, c in new_content.items() if (context.get(p) or "") != (c or "")}
    return text if got == want else None


def parse_answer(context: dict[str, str | None], output: str) -> dict[str, str]:
    """The new file contents a reply asks for (MalformedAnswer when it is not a well-formed answer)."""
    return apply_edit_blocks(context, parse_edit_blocks(extract_answer(output)))
