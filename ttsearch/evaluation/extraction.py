"""Final-answer extraction: the answer string a model's solution commits to.

The answer is the content of the last ``\\boxed{...}`` (also ``\\boxed {...}``, ``\\fbox{...}``
and the brace-less ``\\boxed 5``); without one, the text after the last "final answer is"
(the Minerva / MATH prompt format: "Final Answer: The final answer is $26$. I hope it is
correct."). Everything here is linear in the input length and never raises, because it runs
on raw model output: truncated generations with unbalanced braces are normal.
"""

from __future__ import annotations

import re

__all__ = ["extract_answer", "matching_braces"]

# A box command not followed by more letters (so `\boxedx` is not a box).
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# Escaped characters are consumed as a pair, so `\{` and `\}` (literal set braces) and the
# second brace of `\\{` never count as grouping braces.
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.DOTALL)
_SPACE_RE = re.compile(r"\s*")
# `\boxed 5`: TeX would take one token; models mean the run up to whitespace or `$`.
_BARE_BOX_ARG_RE = re.compile(r"[^\s$]+")
_HOPE_RE = re.compile(r"i hope", re.IGNORECASE)
_FINAL_RE = re.compile(r"final answer", re.IGNORECASE)


def matching_braces(text: str) -> dict[int, int]:
    """Map the index of every balanced grouping `{` in `text` to the index of its `}`.

    One left-to-right pass with a stack; unmatched braces are left out of the map.
    """
    stack: list[int] = []
    match: dict[int, int] = {}
    for tok in _BRACE_TOKEN_RE.finditer(text):
        ch = tok.group()
        if ch == "{":
            stack.append(tok.start())
        elif ch == "}" and stack:
            match[stack.pop()] = tok.start()
    return match


def _last_boxed(text: str) -> str | None:
    boxes = list(_BOX_RE.finditer(text))
    if not boxes:
        return None
    match = matching_braces(text)
    # Walk back from the last box: a truncated (unbalanced) or empty last box should not
    # hide an earlier complete one.
    for box in reversed(boxes):
        arg = _SPACE_RE.match(text, box.end()).end()  # type: ignore[union-attr]  # `\s*` matches at every position
        if arg >= len(text):
            continue
        if text[arg] == "{":
            close = match.get(arg)
            if close is None:
                continue
            content = text[arg + 1 : close].strip()
        else:
            bare = _BARE_BOX_ARG_RE.match(text, arg)
            content = bare.group().rstrip(".,;") if bare else ""
        if content:
            return content
    return None


def _strip_math_delimiters(s: str) -> str:
    s = s.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left):
            s = s[len(left) :]
        if s.endswith(right):
            s = s[: -len(right)]
        s = s.strip()
    return s


def _final_answer_phrase(text: str) -> str | None:
    *_, last = (None, *_FINAL_RE.finditer(text))
    if last is None:
        return None
    rest = text[last.end() :].lstrip()
    if rest[:2].lower() == "is":
        rest = rest[2:]
    elif not rest.startswith(":"):
        return None  # "final answer, we ..." is prose, not an answer
    rest = rest.lstrip().lstrip(":")
    hope = _HOPE_RE.search(rest)
    if hope:
        rest = rest[: hope.start()]
    rest = rest.strip().split("\n", 1)[0]
    # "$26$." -> "26": the sentence's full stop sits outside or inside the math.
    answer = _strip_math_delimiters(rest.strip().rstrip("."))
    answer = answer.rstrip(".").strip()
    return answer or None


def extract_answer(text: str) -> str | None:
    """The final answer in `text`, or None when it commits to none.

    >>> extract_answer(r"so $x = \\boxed{\\frac{1}{2}}$.")
    '\\\\frac{1}{2}'
    >>> extract_answer("Therefore, the final answer is: $26$. I hope it is correct.")
    '26'
    """
    if not isinstance(text, str) or not text:
        return None
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    return _final_answer_phrase(text)
