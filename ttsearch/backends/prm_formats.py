"""How a process reward model wants its input: a small config per input format, and the
pure functions that turn (question, steps) into the token ids a PRM scores.

A `PrmFormat` says how the text is laid out (`layout`), where each step's score is read
(the position of an *anchor*: after the step tag, or at the start of the assistant's
"+" turn) and which head produces it (`head`: two label tokens of the LM head, or a
2-label token classifier). It is not keyed on model names; presets cover the three open
formats (see the shared reference, "PRM input formats"):

- `MATH_SHEPHERD`  "{question} {step 1} ки\\n{step 2} ки ..."; score = softmax over the
  ("+", "-") logits at each tag.
- `RLHFLOW`        Llama 3 chat: user "{question} {step 1}", assistant "+", user
  "{step 2}", assistant "+", ...; score of step k = P("+") / (P("+") + P("-")) at the
  position that predicts step k's assistant "+".
- `QWEN_PRM`       ChatML: system, user = question, assistant = steps each followed by
  "<extra_0>"; score = P(label 1) of the token classifier at each "<extra_0>".

In every format a step's score is the model output at one token position `p` (the
anchor's last token), and depends only on tokens `<= p`. `PrmEncoder.encode` returns the
token ids plus those positions, so a backend can read scores from one pass over the
whole sequence (pooling) or send `ids[:p + 1]` per step (generation; cache friendly).

Tokenization: the text is cut right after each anchor and each piece is tokenized
behind the anchor that precedes it (its ids are those of `anchor + piece` minus the
anchor's), so SentencePiece-style tokenizers, which prefix "▁" to every `encode()` call,
add no spurious "▁" at the cuts. The cuts sit at pre-tokenizer boundaries (after a
special token, or after a tag word such as " ки" that the step's next text cannot merge
with), so the ids equal those of tokenizing the whole text, as the reference
implementations do; the tests check this on the real Llama 3 and Qwen2 tokenizers and on
small SentencePiece-style ones. Each piece's ids depend only on the piece and the anchor
before it, so the ids of a prefix of the steps are a prefix of the ids of all steps (up
to the last score position), which the generative scorer's prefix caching relies on.
This holds for any tokenizer; only where a tokenizer merges a step's end with the anchor,
or the anchor with the text after it, do the ids differ from whole-text tokenization (the
anchor is then kept as its own token, so the score is still read where the PRM expects).

Steps come without their "\\n\\n" separators; nothing here splits text, so no empty
trailing step can appear (a defect of the reference implementation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from ttsearch.backends.chat import LLAMA3_CHAT_FORMAT, ChatFormat
from ttsearch.prompts import QWEN_PRM_SYSTEM_PROMPT, STEP_SEPARATOR

__all__ = [
    "CHATML_CHAT_FORMAT",
    "LLAMA31_DEFAULT_SYSTEM",
    "MATH_SHEPHERD",
    "PRM_FORMATS",
    "QWEN_PRM",
    "RLHFLOW",
    "PrmEncoder",
    "PrmFormat",
    "PrmInput",
    "format_segments",
    "format_text",
]

# Layouts:
#   "tagged"          question, then each step followed by `step_tag`, steps joined by `step_joiner`
#   "turns"           a chat: each step is a user turn answered by an assistant turn holding the
#                     good label; the anchor is the start of that assistant turn
#   "assistant_tags"  a chat: system, user = question, one assistant turn with each step
#                     followed by `step_tag`
Layout = Literal["tagged", "turns", "assistant_tags"]

# Where the score comes from:
#   "lm"          the LM head: P(good) / (P(good) + P(bad)) over `label_tokens`
#   "classifier"  a token-classification head: P(label `positive_label`)
Head = Literal["lm", "classifier"]

# <|im_start|>{role}\n{content}<|im_end|>\n, as Qwen2.5's chat template (no stripping).
CHATML_CHAT_FORMAT = ChatFormat(
    bos="",
    turn_start="<|im_start|>{role}\n",
    turn_end="<|im_end|>\n",
    strip_content=False,
)

# The Llama 3.1 Instruct chat template always opens with this system turn (even with no
# system message), and RLHFlow/Llama3.1-8B-PRM-Deepseek-Data was trained and evaluated
# through that template (`apply_chat_template` on the bare conversation).
LLAMA31_DEFAULT_SYSTEM = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"


@dataclass(frozen=True, slots=True)
class PrmFormat:
    """One PRM input format. Use a preset, or `dataclasses.replace` one."""

    layout: Layout
    head: Head
    step_tag: str = ""  # tagged / assistant_tags: text after every step (" ки", "<extra_0>")
    step_joiner: str = ""  # tagged: text between one tagged step and the next ("\n")
    question_joiner: str = " "  # tagged / turns: text between the question and step 1
    chat: ChatFormat | None = None  # turns / assistant_tags: the chat markup
    system_prompt: str | None = None  # turns / assistant_tags: a system turn first (None: none)
    label_tokens: tuple[str, str] = ("+", "-")  # lm head: (good, bad), each one token
    positive_label: int = 1  # classifier head: the label whose probability is the score
    # Outcome reward model: step k's score is that of steps[:k+1] joined by "\n\n" into
    # one block and scored as a single (final) step; nothing is shared between steps.
    outcome_only: bool = False
    # Let the tokenizer add its special tokens (BOS) in front, as `tokenizer(text)` does;
    # False when the chat markup writes BOS itself.
    add_special_tokens: bool = False

    def __post_init__(self) -> None:
        if self.layout not in ("tagged", "turns", "assistant_tags"):
            raise ValueError(f"unknown layout {self.layout!r}")
        if self.head not in ("lm", "classifier"):
            raise ValueError(f"unknown head {self.head!r}")
        if self.layout in ("tagged", "assistant_tags") and not self.step_tag:
            raise ValueError(f"layout {self.layout!r} needs a step_tag")
        if self.layout in ("turns", "assistant_tags") and self.chat is None:
            raise ValueError(f"layout {self.layout!r} needs a chat format")
        if self.layout == "turns" and self.head != "lm":
            raise ValueError("layout 'turns' reads the assistant's label token: it needs head='lm'")
        if len(self.label_tokens) != 2 or not all(self.label_tokens) or len(set(self.label_tokens)) != 2:
            raise ValueError(f"label_tokens must be two distinct non-empty strings, got {self.label_tokens!r}")
        if self.positive_label < 0:
            raise ValueError(f"positive_label must be >= 0, got {self.positive_label}")

    @property
    def anchor(self) -> str:
        """The text whose last token is the position each step's score is read at."""
        if self.layout == "turns":
            assert self.chat is not None
            return self.chat.turn_start.replace("{role}", "assistant")
        return self.step_tag

    def as_outcome_model(self) -> PrmFormat:
        """The same format used as an outcome reward model (see `outcome_only`)."""
        return replace(self, outcome_only=True)


MATH_SHEPHERD = PrmFormat(
    layout="tagged",
    head="lm",
    step_tag=" ки",
    step_joiner="\n",
    question_joiner=" ",
    add_special_tokens=True,
)

RLHFLOW = PrmFormat(
    layout="turns",
    head="lm",
    question_joiner=" ",
    chat=LLAMA3_CHAT_FORMAT,
    system_prompt=LLAMA31_DEFAULT_SYSTEM,
)

QWEN_PRM = PrmFormat(
    layout="assistant_tags",
    head="classifier",
    step_tag="<extra_0>",
    chat=CHATML_CHAT_FORMAT,
    system_prompt=QWEN_PRM_SYSTEM_PROMPT,
    positive_label=1,
)

# The presets by the name recipes and the CLI use (the one map of format names; the toy
# world adds "toy" in the study layer, where it is known).
PRM_FORMATS: dict[str, PrmFormat] = {"math_shepherd": MATH_SHEPHERD, "rlhflow": RLHFLOW, "qwen": QWEN_PRM}


def _turn(chat: ChatFormat, role: str, content: str) -> str:
    if chat.strip_content:
        content = content.strip()
    return chat.turn_start.replace("{role}", role) + content + chat.turn_end


def _system_part(fmt: PrmFormat) -> str:
    assert fmt.chat is not None
    if fmt.system_prompt is None:
        return ""
    # Verbatim: a template's fixed system text (LLAMA31_DEFAULT_SYSTEM) is not trimmed.
    return fmt.chat.turn_start.replace("{role}", "system") + fmt.system_prompt + fmt.chat.turn_end


def format_segments(fmt: PrmFormat, question: str, steps: Sequence[str]) -> list[str]:
    """The PRM input text for (question, steps), cut right after each step's anchor.

    Piece k (k < len(steps)) ends with step k's anchor; an extra last piece holds what
    follows the last anchor (e.g. the closing "+<|eot_id|>"), if anything. With no steps,
    one piece holds the text that precedes the first step (nothing to score).
    Ignores `outcome_only` (see `PrmEncoder`).
    """
    segments: list[str] = []
    if fmt.layout == "tagged":
        current = question + fmt.question_joiner if steps else question
        for k, step in enumerate(steps):
            if k > 0:
                current = fmt.step_joiner
            segments.append(current + step + fmt.step_tag)
        return segments or [current]

    chat = fmt.chat
    assert chat is not None
    head = chat.bos + _system_part(fmt)
    if fmt.layout == "turns":
        good = fmt.label_tokens[0]
        assistant_start = fmt.anchor
        current = head
        for k, step in enumerate(steps):
            content = question + fmt.question_joiner + step if k == 0 else step
            segments.append(current + _turn(chat, "user", content) + assistant_start)
            current = good + chat.turn_end
        if not steps:
            return [head + _turn(chat, "user", question)]
        segments.append(current)
        return segments

    # assistant_tags
    current = head + _turn(chat, "user", question) + chat.turn_start.replace("{role}", "assistant")
    for step in steps:
        segments.append(current + step + fmt.step_tag)
        current = ""
    segments.append(current + chat.turn_end)
    return segments


def format_text(fmt: PrmFormat, question: str, steps: Sequence[str]) -> str:
    """The whole PRM input text for (question, steps) (what a reference implementation tokenizes)."""
    return "".join(format_segments(fmt, question, steps))


@dataclass(frozen=True, slots=True)
class PrmInput:
    """One sequence to run through the PRM and where to read its scores."""

    token_ids: tuple[int, ...]  # the whole input, BOS included
    score_positions: tuple[int, ...]  # per scored step: the position whose output is its score


class PrmEncoder:
    """Binds a `PrmFormat` to a tokenizer: resolves the label / anchor token ids once and
    builds `PrmInput`s. Pure (no engine); the tokenizer needs `encode(text,
    add_special_tokens=...)` and `convert_ids_to_tokens` (any Hugging Face tokenizer)."""

    def __init__(self, fmt: PrmFormat, tokenizer: Any) -> None:
        self.format = fmt
        self.tokenizer = tokenizer
        anchor_ids = tokenizer.encode(fmt.anchor, add_special_tokens=False)
        if not anchor_ids:
            raise ValueError(f"anchor {fmt.anchor!r} encodes to no tokens")
        self.anchor_id: int = anchor_ids[-1]  # the token each score is read at
        self.label_ids: tuple[int, int] | None = None  # (good, bad) for head == "lm"
        if fmt.head == "lm":
            good, bad = (self._single_token(t) for t in fmt.label_tokens)
            self.label_ids = (good, bad)
        self._leading: list[int] = self._leading_special_ids() if fmt.add_special_tokens else []
        self._context_ids: dict[str, list[int]] = {}
        # The anchor's ids where it follows a cut (not at the start of an encode() call,
        # which SentencePiece-style tokenizers prefix with "▁"): as it follows itself.
        self._anchor_after_cut: list[int] = self._encode_after(fmt.anchor, fmt.anchor)

    def _single_token(self, text: str) -> int:
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"label token {text!r} is not a single token in this tokenizer: {ids}")
        return ids[0]

    def _leading_special_ids(self) -> list[int]:
        # What `encode(text)` puts in front of the text's own ids (BOS for Llama / Mistral,
        # nothing for Qwen), found by difference so that any trailing specials are left out.
        bare = self.tokenizer.encode("a", add_special_tokens=False)
        full = self.tokenizer.encode("a", add_special_tokens=True)
        for start in range(len(full) - len(bare) + 1):
            if full[start : start + len(bare)] == bare:
                return list(full[:start])
        return []

    @property
    def label_token_strings(self) -> list[str]:
        """The label tokens as vocabulary strings (what vLLM's `classifier_from_token` takes)."""
        if self.label_ids is None:
            raise ValueError("this format has no LM-head label tokens")
        return list(self.tokenizer.convert_ids_to_tokens(list(self.label_ids)))

    def encode(self, question: str, steps: Sequence[str]) -> PrmInput:
        """Token ids of the format's text for (question, steps), one score position per step.

        Ignores `outcome_only`: for an outcome model use `encode_requests`. A step whose
        text would merge with the anchor in tokenization is encoded apart from it, so every
        step gets its score position.
        """
        ids: list[int] = list(self._leading)
        positions: list[int] = []
        segments = format_segments(self.format, question, steps)
        anchor = self.format.anchor
        context = ""  # the text in front of the segment: "" at the start, else an anchor
        for k, segment in enumerate(segments):
            piece = self._encode_after(context, segment)
            if k < len(steps) and (not piece or piece[-1] != self.anchor_id):
                # The step's last characters merged with the anchor (e.g. a tokenizer with
                # a " = " token, and a step ending in "="): score at the anchor anyway, as
                # the PRM was trained to, by encoding the step and the anchor separately.
                assert segment.endswith(anchor)
                piece = self._encode_after(context, segment[: -len(anchor)]) + self._anchor_after_cut
                if piece[-1] != self.anchor_id:
                    raise ValueError(f"step {k}: cannot place the anchor {anchor!r} after {steps[k]!r}")
            ids += piece
            if k < len(steps):
                positions.append(len(ids) - 1)
            context = anchor
        return PrmInput(tuple(ids), tuple(positions))

    def _encode_after(self, context: str, text: str) -> list[int]:
        """Ids of `text` as they come out of tokenizing `context + text` whole.

        SentencePiece-style tokenizers (Llama 2, Mistral) prefix "▁" to every `encode()`
        call, so `encode(text)` alone would add a spurious "▁" at each cut; tokenizing
        behind the context that really precedes the text (an anchor) gives the ids of the
        whole text. Where the tokenizer merges across the cut, the text is encoded alone
        (the anchor keeps its token, at the cost of differing from whole-text ids there).
        """
        if not context:
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        head = self._context_ids.get(context)
        if head is None:
            head = self._context_ids[context] = list(self.tokenizer.encode(context, add_special_tokens=False))
        both = list(self.tokenizer.encode(context + text, add_special_tokens=False))
        if both[: len(head)] == head:
            return both[len(head) :]
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_requests(self, question: str, steps: Sequence[str], *, first: int = 0) -> list[PrmInput]:
        """The inputs that score `steps[first:]`, each cut after its last needed position.

        A process model: one input (all steps up to the last), with the positions of
        steps `first..`. An outcome model (`outcome_only`): one input per step k, the
        steps up to k joined into one block, with its single position.
        """
        if not 0 <= first <= len(steps):
            raise ValueError(f"first must be in [0, {len(steps)}], got {first}")
        if first == len(steps):
            return []
        if self.format.outcome_only:
            out = []
            for k in range(first, len(steps)):
                whole = self.encode(question, [STEP_SEPARATOR.join(steps[: k + 1])])
                out.append(_truncate(whole, whole.score_positions))
            return out
        whole = self.encode(question, steps)
        return [_truncate(whole, whole.score_positions[first:])]


def _truncate(full: PrmInput, positions: tuple[int, ...]) -> PrmInput:
    # Tokens after the last needed position cannot change any score (causal models).
    return PrmInput(full.token_ids[: positions[-1] + 1], positions)
