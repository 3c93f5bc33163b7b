"""Canonical answer keys: group equivalent answers by string key instead of pairwise sympy.

Majority voting over N sampled answers needs equivalence classes. Comparing all pairs with a
symbolic grader is O(N^2) slow sympy calls, so instead every answer is reduced to a key:

1. `normalize_answer` rewrites the LaTeX surface form (``\\dfrac`` -> ``\\frac``, ``\\left``,
   spacing commands, ``$``, ``\\boxed``, ``\\text{...}`` units, degrees, percent, thousands
   separators, a simple left-hand side ``x = 3`` -> ``3``, ...).
2. `canonical_form` then parses what is left: numbers (integers, decimals, scientific
   notation, fractions, radicals, pi, i) become an exact sympy value keyed by its ``srepr``;
   tuples, intervals, unions, sets and matrices get a structural key built from their elements'
   keys; anything else keeps its normalised string.

Contract: equal keys imply equivalent answers (under the usual grader conventions that units,
``%``, degrees and a simple left-hand side are ignored); equivalent answers usually, not
always, get equal keys (``1/(1+\\sqrt2)`` vs ``\\sqrt2-1`` do not), so the grader still falls
back to math-verify. Decimals are parsed exactly (``0.5`` is 1/2), never rounded, so nearby
but different numbers never share a key.

No call here can hang: inputs longer than `MAX_ANSWER_CHARS` are only whitespace-collapsed,
the regexes have no nested quantifiers, and sympy only ever sees exact numbers whose size is
checked before each operation (no symbols, no simplify, no huge powers), so every sympy call
is a bounded arithmetic step.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Sequence

import sympy

from ttsearch.evaluation.extraction import matching_braces

__all__ = [
    "MAX_ANSWER_CHARS",
    "canonical_form",
    "group_answers",
    "normalize_answer",
    "numeric_value",
    "strip_wrappers",
]

MAX_ANSWER_CHARS = 1000  # longer strings are not answers but solutions; keyed verbatim
_MAX_NUMERIC_CHARS = 300  # only strings this short are tried as numbers
_MAX_DEPTH = 30  # nesting depth for the structural and numeric parsers
_MAX_LITERAL_DIGITS = 80
_MAX_RESULT_BITS = 10_000  # ~3000 digits: under Python's 4300-digit int->str limit
_MAX_OPS = 400

# ---------------------------------------------------------------------------------------------
# 1. String normalisation
# ---------------------------------------------------------------------------------------------

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u22c5": "\\cdot ",
    "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u221a": "\\sqrt", "\u2264": "\\leq ",
    "\u2265": "\\geq ", "\u2260": "\\neq ", "\u00b2": "^2", "\u00b3": "^3", "\u00a0": " ",
    "\u222a": "\\cup ", "\u00b0": "^\\circ", "\u2009": " ", "\u202f": " ",
}  # fmt: skip
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))

_SIMPLE_REPLACEMENTS: tuple[tuple[str, str], ...] = (
    ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\cfrac", "\\frac"),
    ("\\dbinom", "\\binom"), ("\\tbinom", "\\binom"), ("\\displaystyle", ""),
    ("{,}", ","), ("\\$", ""), ("$", ""), ("\\%", ""), ("%", ""),
    ("\\leqslant", "\\leq"), ("\\geqslant", "\\geq"), ("<=", "\\leq "), (">=", "\\geq "),
    ("!=", "\\neq "),
)  # fmt: skip
_WORD_COMMANDS = (
    # command followed by a non-letter, so `\le` does not eat the start of `\left`
    (re.compile(r"\\le(?![A-Za-z])"), "\\leq "), (re.compile(r"\\ge(?![A-Za-z])"), "\\geq "),
    (re.compile(r"\\ne(?![A-Za-z])"), "\\neq "), (re.compile(r"\\lt(?![A-Za-z])"), "<"),
    (re.compile(r"\\gt(?![A-Za-z])"), ">"),
    (re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?![A-Za-z])\.?"), ""),
    (re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![A-Za-z])|\\degree(?![A-Za-z])"), ""),
)  # fmt: skip
# Text-like groups. The text family may hold units ("5 \text{ cm}") and is dropped when a
# number stays; the math family (\mathrm{e}, \mathbf{A}) is always just unwrapped.
_TEXT_CMD_RE = re.compile(r"\\(text(?:bf|it|rm|normal|sf|tt|up)?|mbox|hbox)\s*(?=\{)")
_MATH_CMD_RE = re.compile(r"\\(math(?:rm|bf|it|sf|tt|normal)|operatorname|bm|boldsymbol)\s*(?=\{)")
# Spacing commands. `\\` (a matrix row break) is matched first so that `\\ ` is not read
# as `\` + control space; `\!` (negative space, as in `10,\!080`) joins digit groups.
_SPACING_RE = re.compile(r"\\\\|\\!\s*|\\[,;: ]|~|\\q?quad(?![A-Za-z])")
_UNIT_POWER_RE = re.compile(r"\s*\^\s*(?:\{\s*\d\s*\}|\d)")
_AND_TEXT_RE = re.compile(r"\\text\w*\s*\{\s*(and|or)\s*\}")
_OXFORD_RE = re.compile(r"\s*,\s*(?<![A-Za-z\\])(?:and|or)(?![A-Za-z])\s*")
_AND_RE = re.compile(r"\s*(?<![A-Za-z\\])(?:and|or)(?![A-Za-z])\s*")
_THOUSANDS_COMMA_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_THOUSANDS_SPACE_RE = re.compile(r"[+-]?\d{1,3}(?: \d{3})+(?:\.\d+)?")
# "28 percent", "125 miles", "5 square units": a letter-free number followed by words. Words
# need two letters so `2 k` or `3 x` are not mistaken for units.
_FIRST_LETTER_RE = re.compile(r"[A-Za-z\\]")
_WORDS_RE = re.compile(r"[A-Za-z.\s]+")
_KEEP_SPACE_RE = re.compile(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])")  # `\pi r` must not become `\pir`
_SPACE_RE = re.compile(r"\s+")
_LIST_NOT_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_FRAC_TWO_TOKENS_RE = re.compile(r"\\frac([0-9A-Za-z])([0-9A-Za-z])")
_FRAC_FIRST_TOKEN_RE = re.compile(r"\\frac([0-9A-Za-z])(?=\{)")
_FRAC_SECOND_TOKEN_RE = re.compile(r"\\frac(\{[^{}]*\})([0-9A-Za-z])")
_SQRT_TOKEN_RE = re.compile(r"\\sqrt([0-9A-Za-z])")
_SCRIPT_BRACE_RE = re.compile(r"([_^])\{([0-9A-Za-z])\}")
_SIMPLE_LHS_RE = re.compile(r"(?:[A-Za-z]|\\[A-Za-z]+)(?:_(?:\{[A-Za-z0-9]+\}|[A-Za-z0-9]))?'*(?:\([A-Za-z,]*\))?")
_CHOICE_RE = re.compile(r"\(([A-Z])\)")
_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_BOX_PREFIXES = ("\\boxed", "\\fbox")


def strip_wrappers(s: str) -> str:
    """Remove math delimiters and a \\boxed{} that wrap the whole answer, repeatedly."""
    for _ in range(8):
        before = s
        s = s.strip().rstrip(".").strip()
        for left, right in _DELIMITERS:
            if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
                s = s[len(left) : len(s) - len(right)].strip()
        for prefix in _BOX_PREFIXES:
            if s.startswith(prefix):
                rest = s[len(prefix) :].lstrip()
                if rest.startswith("{") and matching_braces(rest).get(0) == len(rest) - 1:
                    s = rest[1:-1]
        if s.startswith("{") and matching_braces(s).get(0) == len(s) - 1:
            s = s[1:-1]
        if s == before:
            break
    return s.strip()


def _groups(s: str, cmd_re: re.Pattern[str]) -> list[tuple[int, int, int]]:
    """(command start, `{` index, `}` index) of outermost balanced `cmd_re` groups."""
    match = matching_braces(s)
    out: list[tuple[int, int, int]] = []
    end = -1
    for m in cmd_re.finditer(s):
        if m.start() < end:
            continue  # nested inside the previous group; handled when that one is unwrapped
        close = match.get(m.end())
        if close is not None:
            out.append((m.start(), m.end(), close))
            end = close
    return out


def _splice(s: str, groups: list[tuple[int, int, int]], keep: Callable[[str], str]) -> str:
    parts: list[str] = []
    pos = 0
    for start, open_, close in groups:
        parts.append(s[pos:start])
        parts.append(keep(s[open_ + 1 : close]))
        pos = close + 1
    parts.append(s[pos:])
    return "".join(parts)


def _unwrap_text(s: str) -> str:
    for _ in range(4):  # nested \text{\textbf{...}}
        math_groups = _groups(s, _MATH_CMD_RE)
        if math_groups:
            s = _splice(s, math_groups, lambda inner: inner)
        text_groups = _groups(s, _TEXT_CMD_RE)
        if not text_groups:
            return s
        without = _splice(s, text_groups, lambda inner: " ")
        # `15 \text{cm}^2`: the unit's exponent goes with it.
        without_units = _UNIT_POWER_RE.sub("", without) if "^" in without else without
        if any(c.isdigit() for c in without) and without_units.strip():
            s = without_units
        else:
            s = _splice(s, text_groups, lambda inner: inner)
    return s


def _spacing(m: re.Match[str]) -> str:
    tok = m.group()
    return tok if tok == "\\\\" else "" if tok.startswith("\\!") else " "


def _drop_unit_words(s: str) -> str:
    """ "28 percent", "125 miles", "5 square units" -> the number.

    Only a letter-free head with a digit, a space, then words of two or more letters, so that
    `2 k` or `3 x` are not mistaken for units. (Procedural: a regex with a repeated word group
    would backtrack exponentially on long letter runs.)
    """
    first = _FIRST_LETTER_RE.search(s)
    if first is None or first.start() == 0:
        return s
    head, tail = s[: first.start()], s[first.start() :]
    if not head[-1].isspace() or not any(c.isdigit() for c in head):
        return s
    if not _WORDS_RE.fullmatch(tail) or any(len(w.strip(".")) < 2 for w in tail.split()):
        return s
    return head.strip()


def _and_lists(s: str) -> str:
    """ "6 and 8" -> "6,8"; "19, 46, and 82" -> "19,46,82"; but assignment groups
    "p = 5, q = 2 and p = 7, q = 2" -> "p=5,q=2;p=7,q=2" (`and` joins groups holding commas)."""
    if "and" not in s and "or" not in s:
        return s
    joined = _AND_RE.sub("\x00", _OXFORD_RE.sub(",", s))
    if joined.startswith("\x00") or joined.endswith("\x00"):
        return s  # a dangling "and" joins nothing: not a list
    return joined.replace("\x00", ";" if "," in joined and "=" in joined else ",")


def _drop_simple_lhs(s: str) -> str:
    if s.count("=") == 1:
        lhs, rhs = s.split("=")
        if rhs and _SIMPLE_LHS_RE.fullmatch(lhs):
            return rhs
    elif "\\in" in s:
        lhs, _, rhs = s.partition("\\in")
        if rhs and rhs[0] in "([\\" and _SIMPLE_LHS_RE.fullmatch(lhs):
            return rhs
    return s


def _constant(text: str) -> Callable[[re.Match[str]], str]:
    """A `re.sub` replacement function that returns `text` as it is (no template escapes)."""
    return lambda _m: text


def normalize_answer(answer: str) -> str:
    """Rewrite an answer's LaTeX surface form so that trivially different spellings agree.

    >>> normalize_answer(r"$x = \\dfrac{1}{2}\\text{ cm}$")
    '\\\\frac{1}{2}'
    """
    s = answer.strip()
    if len(s) > MAX_ANSWER_CHARS:
        return _SPACE_RE.sub(" ", s)
    s = strip_wrappers(s)
    s = _UNICODE_RE.sub(lambda m: _UNICODE[m.group()], s)
    s = _AND_TEXT_RE.sub(r" \1 ", s)
    for old, new in _SIMPLE_REPLACEMENTS:
        s = s.replace(old, new)
    for pattern, new in _WORD_COMMANDS:
        s = pattern.sub(_constant(new), s)  # a function: `new` holds backslashes
    s = _SPACING_RE.sub(_spacing, s)
    s = _unwrap_text(s)
    s = _SPACE_RE.sub(" ", s).strip().rstrip(".").strip()
    s = _drop_unit_words(s)
    if _THOUSANDS_COMMA_RE.fullmatch(s):
        s = s.replace(",", "")
    elif _THOUSANDS_SPACE_RE.fullmatch(s):
        s = s.replace(" ", "")
    s = _and_lists(s)
    s = _KEEP_SPACE_RE.sub("\\1\x00", s).replace(" ", "").replace("\x00", " ")
    # Real thousands separators are gone by now, so "32, 349" is a list; keep it from
    # reading as the number 32349 once the space is gone.
    s = _LIST_NOT_THOUSANDS_RE.sub(", ", s)
    s = _FRAC_TWO_TOKENS_RE.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_FIRST_TOKEN_RE.sub(r"\\frac{\1}", s)
    s = _FRAC_SECOND_TOKEN_RE.sub(r"\\frac\1{\2}", s)
    s = _SQRT_TOKEN_RE.sub(r"\\sqrt{\1}", s)
    s = _SCRIPT_BRACE_RE.sub(r"\1\2", s)
    s = _drop_simple_lhs(s)
    s = strip_wrappers(s)
    choice = _CHOICE_RE.fullmatch(s)  # "\text{(C)}" -> "C"
    return choice.group(1) if choice else s


# ---------------------------------------------------------------------------------------------
# 2. Exact numeric values
# ---------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"\\[A-Za-z]+|\\.|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|\S", re.ASCII)
_NUMBER_TOKEN_RE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_DIGITS_RE = re.compile(r"\d+", re.ASCII)
_MUL_TOKENS = frozenset({"*", "\\cdot", "\\times"})
_DIV_TOKENS = frozenset({"/", "\\div"})
_ATOM_STARTS = frozenset({"(", "{", "\\frac", "\\sqrt", "\\pi", "i"})


class _NotANumber(Exception):
    """The string is not a bounded numeric expression this parser handles."""


class _NumberParser:
    """Recursive descent over +, -, *, /, ^, \\frac, \\sqrt, parentheses, pi and i."""

    def __init__(self, text: str) -> None:
        self.tokens = _TOKEN_RE.findall(text)
        self.pos = 0
        self.ops = 0

    def parse(self) -> sympy.Expr:
        value = self._expr(0)
        if self.pos != len(self.tokens):
            raise _NotANumber
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> str:
        tok = self._peek()
        if tok is None or (expected is not None and tok != expected):
            raise _NotANumber
        self.pos += 1
        return tok

    def _step(self, depth: int) -> None:
        self.ops += 1
        if self.ops > _MAX_OPS or depth > _MAX_DEPTH:
            raise _NotANumber

    def _expr(self, depth: int) -> sympy.Expr:
        self._step(depth)
        value = self._term(depth)
        while self._peek() in ("+", "-"):
            sign = self._take()
            rhs = self._term(depth)
            value = _checked(value + rhs if sign == "+" else value - rhs)
        return value

    def _term(self, depth: int) -> sympy.Expr:
        start = self.pos
        value = self._unary(depth)
        if self._is_bare_integer(start) and self._peek() == "\\frac":
            value = self._mixed_number(value, depth)
        divided = False
        while True:
            tok = self._peek()
            if tok in _MUL_TOKENS:
                self._take()
                value = _checked(value * self._unary(depth))
            elif tok in _DIV_TOKENS:
                self._take()
                value = self._divide(value, self._unary(depth))
                divided = True
            elif tok is not None and (tok in _ATOM_STARTS or _NUMBER_TOKEN_RE.fullmatch(tok)):
                if divided:
                    raise _NotANumber  # 1/2\pi: pi/2 or 1/(2 pi)? No key beats a wrong one.
                value = _checked(value * self._power(depth))  # implicit product: 2\sqrt{3}, 3\pi
            else:
                return value

    def _is_bare_integer(self, start: int) -> bool:
        """Tokens start..pos are one integer literal, maybe signed."""
        literal = self.tokens[start : self.pos]
        if literal and literal[0] in ("+", "-"):
            literal = literal[1:]
        return len(literal) == 1 and _DIGITS_RE.fullmatch(literal[0]) is not None

    def _mixed_number(self, whole: sympy.Expr, depth: int) -> sympy.Expr:
        # "918\frac{1}{2}" means 918 + 1/2 (what graders assume), not 459.
        start = self.pos
        frac = self._atom(depth + 1)
        if isinstance(frac, sympy.Rational) and 0 < frac < 1 and self._peek() != "^":
            return _checked(whole + frac if whole >= 0 else whole - frac)
        self.pos = start  # an ordinary product such as 2\frac{\pi}{3}
        return whole

    def _unary(self, depth: int) -> sympy.Expr:
        tok = self._peek()
        if tok == "-":
            self._take()
            return -self._unary(depth + 1)
        if tok == "+":
            self._take()
            return self._unary(depth + 1)
        return self._power(depth)

    def _power(self, depth: int) -> sympy.Expr:
        base = self._atom(depth + 1)
        if self._peek() != "^":
            return base
        self._take()
        if self._peek() == "{":
            exponent = self._atom(depth + 1)
        else:
            exponent = self._unary(depth + 1)  # models write 2^10 and 10^-3 without braces
        return _bounded_pow(base, exponent)

    def _divide(self, num: sympy.Expr, den: sympy.Expr) -> sympy.Expr:
        if den == 0:
            raise _NotANumber
        return _checked(num / den)

    def _arg(self, depth: int) -> sympy.Expr:
        """A TeX macro argument: a braced group or a single token (`\\frac12`)."""
        tok = self._peek()
        if tok == "{":
            return self._atom(depth + 1)
        if tok is not None and _DIGITS_RE.fullmatch(tok):
            self._take()
            return sympy.Integer(tok[0]) if len(tok) == 1 else self._split_digit_token(tok)
        return self._atom(depth + 1)

    def _split_digit_token(self, tok: str) -> sympy.Expr:
        # `\frac123` is \frac{1}{2}3: give back all but the first digit.
        self.tokens[self.pos - 1 : self.pos] = [tok[0], tok[1:]]
        return sympy.Integer(tok[0])

    def _atom(self, depth: int) -> sympy.Expr:
        self._step(depth)
        tok = self._take()
        if _NUMBER_TOKEN_RE.fullmatch(tok):
            if len(tok) > _MAX_LITERAL_DIGITS:
                raise _NotANumber
            return _exact_decimal(tok)
        if tok in ("(", "{"):
            value = self._expr(depth + 1)
            self._take(")" if tok == "(" else "}")
            return value
        if tok == "\\frac":
            num = self._arg(depth)
            return self._divide(num, self._arg(depth))
        if tok == "\\sqrt":
            index = sympy.Integer(2)
            if self._peek() == "[":
                self._take()
                index = self._expr(depth + 1)
                self._take("]")
            radicand = self._arg(depth)
            if not (isinstance(index, sympy.Integer) and 2 <= index <= 12):
                raise _NotANumber
            return _bounded_pow(radicand, sympy.Rational(1, int(index)))
        if tok == "\\pi":
            return sympy.pi
        if tok == "i":
            return sympy.I
        raise _NotANumber


def _checked(value: sympy.Expr) -> sympy.Expr:
    """Refuse values holding rationals too big to key (and slow to multiply further)."""
    atoms = [value] if isinstance(value, sympy.Rational) else value.atoms(sympy.Rational)
    for atom in atoms:
        if max(int(atom.p).bit_length(), int(atom.q).bit_length()) > _MAX_RESULT_BITS:
            raise _NotANumber
    return value


def _exact_decimal(tok: str) -> sympy.Expr:
    mantissa, _, exp = tok.lower().partition("e")
    value = sympy.Rational(mantissa if not mantissa.endswith(".") else mantissa[:-1])
    if exp:
        power = int(exp)
        if abs(power) > 300:
            raise _NotANumber
        value = value * sympy.Integer(10) ** power
    return value


def _bounded_pow(base: sympy.Expr, exponent: sympy.Expr) -> sympy.Expr:
    """base**exponent, refusing anything whose exact value could be huge or slow to build."""
    if not isinstance(exponent, sympy.Rational):
        raise _NotANumber  # 2^{\sqrt2}, 2^\pi: not worth an exact key
    if base == 0 and exponent <= 0:
        raise _NotANumber
    if isinstance(base, sympy.Rational):
        size = max(int(base.p).bit_length(), int(base.q).bit_length(), 1)
        if exponent.q > 12 or abs(exponent.p) * size > _MAX_RESULT_BITS:
            raise _NotANumber
        if exponent.q > 1 and size > 130:
            raise _NotANumber  # roots of huge integers would need factoring
        if base < 0 and exponent.q > 1:
            raise _NotANumber  # principal complex roots: leave to the grader
    elif abs(exponent.p) > 64 or exponent.q > 12:
        raise _NotANumber
    return _checked(base**exponent)


def _number_key(s: str) -> str | None:
    if len(s) > _MAX_NUMERIC_CHARS or not s:
        return None
    try:
        value = _NumberParser(s).parse()
        if value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
            return None
        if isinstance(value, sympy.Integer):
            return f"#{value.p}"
        if isinstance(value, sympy.Rational):
            return f"#{value.p}/{value.q}"
        return f"#{sympy.srepr(value)}"
    except Exception:  # _NotANumber, or sympy refusing a value: then it is simply not a number
        return None


# ---------------------------------------------------------------------------------------------
# 3. Structural keys
# ---------------------------------------------------------------------------------------------

_OPEN = "([{"
_CLOSE = ")]}"
_MATRIX_RE = re.compile(r"\\begin\{([pbvBV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", re.DOTALL)


def _split_top(s: str, sep: str) -> list[str]:
    """Split `s` at `sep` where no bracket of any kind is open (`[0,1)` counts as closed)."""
    parts: list[str] = []
    depth = 0
    start = 0
    i = 0
    n = len(s)
    while i < n:
        ch = s[i]
        if ch == "\\" and i + 1 < n and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i].strip())
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(s[start:].strip())
    return parts


def _encloses(s: str, open_len: int, close_len: int) -> bool:
    """True when the bracket opening at 0 closes at the very end (so `(1)+(2)` is not a pair)."""
    inner = s[open_len : len(s) - close_len]
    depth = 0
    for ch in inner:
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def _structural_key(s: str, depth: int = 0) -> str:
    if not s:
        return ""
    if depth > _MAX_DEPTH:
        return s
    if s in ("\\infty", "+\\infty", "-\\infty"):
        return "-oo" if s[0] == "-" else "oo"
    matrix = _MATRIX_RE.fullmatch(s)
    if matrix:
        rows = [r for r in matrix.group(2).split("\\\\") if r.strip()]
        cells = [[_structural_key(c.strip(), depth + 1) for c in r.split("&")] for r in rows]
        return "M[" + ";".join(",".join(row) for row in cells) + "]"
    for sep, tag in (("\\cup", "U"), (";", "L;")):
        parts = _split_top(s, sep)
        if len(parts) > 1:
            return tag + "[" + "|".join(_structural_key(p, depth + 1) for p in parts) + "]"
    if s.startswith("\\{") and s.endswith("\\}") and _encloses(s, 2, 2):
        elements = _split_top(s[2:-2], ",")
        return "{" + ",".join(sorted(_structural_key(e, depth + 1) for e in elements)) + "}"
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _encloses(s, 1, 1):
        elements = _split_top(s[1:-1], ",")
        if len(elements) > 1 or s[0] == "[":
            keys = ",".join(_structural_key(e, depth + 1) for e in elements)
            return s[0] + keys + s[-1]
    elements = _split_top(s, ",")
    if len(elements) > 1:
        return "L[" + ",".join(_structural_key(e, depth + 1) for e in elements) + "]"
    number = _number_key(s)
    if number is not None:
        return number
    return "str:" + s if s.startswith(("#", "str:")) else s


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def canonical_form(answer: str) -> str:
    """Canonical key of `answer`: equal keys imply equivalent answers. "" for an empty answer.

    Cached (an LRU of 131072 strings): majority voting sees the same strings many times.
    Strings longer than `MAX_ANSWER_CHARS` are solutions, not answers: they are keyed by a
    digest of their whitespace-collapsed text and not cached (they would bloat the cache).

    >>> canonical_form(r"\\dfrac{1}{2}") == canonical_form("0.5") == canonical_form("$x=1/2$")
    True
    """
    if len(answer) > MAX_ANSWER_CHARS:
        text = _SPACE_RE.sub(" ", answer.strip()).encode("utf-8", "surrogatepass")
        return "raw:" + hashlib.blake2b(text, digest_size=16).hexdigest()
    return _cached_key(answer)


@functools.lru_cache(maxsize=1 << 17)
def _cached_key(answer: str) -> str:
    return _structural_key(normalize_answer(answer))


canonical_form.cache_info = _cached_key.cache_info  # type: ignore[attr-defined]  # function attribute: mypy does not model them
canonical_form.cache_clear = _cached_key.cache_clear  # type: ignore[attr-defined]  # function attribute: mypy does not model them


@functools.lru_cache(maxsize=1 << 12)
def numeric_value(answer: str) -> sympy.Expr | None:
    """The exact value of an answer that is a single number (as keyed above), else None."""
    if len(answer) > MAX_ANSWER_CHARS or not canonical_form(answer).startswith("#"):
        return None
    try:
        return _NumberParser(normalize_answer(answer)).parse()
    except Exception:
        return None


def group_answers(answers: Sequence[str | None]) -> dict[str, list[int]]:
    """Canonical key -> indices of the answers with that key, in first-seen order.

    None and empty answers are skipped: they are not votes for anything.
    """
    groups: dict[str, list[int]] = {}
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        key = canonical_form(answer)
        if key:
            groups.setdefault(key, []).append(i)
    return groups
