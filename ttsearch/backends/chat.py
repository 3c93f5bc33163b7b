"""Chat-templating a problem, once, into the token ids that every continuation extends.

The search never re-templates text: it templates the problem here (system turn, user
turn, start of the assistant turn) and from then on appends raw token ids. That avoids
the two classic pitfalls (see README / shared reference): the stock Llama 3 template
trims a partial assistant turn's trailing "\\n\\n", and sending a templated *string* to
vLLM adds a second BOS.

Two sources of format, chosen explicitly or by what the tokenizer carries:
  * the tokenizer's own chat template (`apply_chat_template`), when it has one;
  * a `ChatFormat` written out here, for tokenizers without one (our shared Llama 3
    tokenizer); `LLAMA3_CHAT_FORMAT` is the Llama 3 header format.

`encode_revision_prompt` is the same prompt with the model's previous attempts in between,
as consecutive assistant turns (sequential revisions, arXiv 2408.03314): with none it is
`encode_chat_prompt`'s prompt token for token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ttsearch.prompts import LLAMA3_MATH_SYSTEM_PROMPT

__all__ = [
    "DEFAULT_DATE_STRING",
    "LLAMA3_CHAT_FORMAT",
    "ChatFormat",
    "encode_chat_prompt",
    "encode_revision_prompt",
    "render_chat_format",
]

# Llama 3.1 / 3.2 chat templates stamp "Today Date: <strftime_now>" into the system turn,
# so prompts (and results) would change by the day. We pass this date instead: the
# template's own fallback when it has no clock.
DEFAULT_DATE_STRING = "26 Jul 2024"


@dataclass(frozen=True, slots=True)
class ChatFormat:
    """A chat format written out by hand: `bos`, then per turn
    `turn_start(role) + content + turn_end`, then `turn_start("assistant")`."""

    bos: str  # text of the BOS token the format starts with ("" for none)
    turn_start: str  # text before a turn's content; "{role}" is replaced by the role
    turn_end: str  # text after a turn's content
    strip_content: bool = True  # strip each turn's content, as the stock Llama 3 template does

    def __post_init__(self) -> None:
        if "{role}" not in self.turn_start:
            raise ValueError(f"turn_start must contain '{{role}}', got {self.turn_start!r}")


# <|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>
# <|start_header_id|>user<|end_header_id|>\n\n{problem}<|eot_id|>
# <|start_header_id|>assistant<|end_header_id|>\n\n
LLAMA3_CHAT_FORMAT = ChatFormat(
    bos="<|begin_of_text|>",
    turn_start="<|start_header_id|>{role}<|end_header_id|>\n\n",
    turn_end="<|eot_id|>",
)


def render_chat_format(fmt: ChatFormat, messages: list[dict[str, str]]) -> str:
    """The prompt text for `messages`, ending with the start of the assistant turn."""
    parts = [fmt.bos]
    for message in messages:
        content = message["content"].strip() if fmt.strip_content else message["content"]
        parts += [fmt.turn_start.replace("{role}", message["role"]), content, fmt.turn_end]
    parts.append(fmt.turn_start.replace("{role}", "assistant"))
    return "".join(parts)


def encode_chat_prompt(
    tokenizer: Any,
    problem: str,
    *,
    system_prompt: str | None = LLAMA3_MATH_SYSTEM_PROMPT,
    chat_format: ChatFormat | Literal["tokenizer"] | None = None,
    date_string: str | None = DEFAULT_DATE_STRING,
) -> list[int]:
    """Token ids of `problem` as a chat: system turn (unless `system_prompt` is None), user
    turn, and the start of the assistant turn. Send them to vLLM as token ids (no second BOS).

    `date_string` is passed to the tokenizer's chat template (Llama 3.1+ templates print it
    as "Today Date"; templates without a date ignore it); None lets the template choose
    (today's date for Llama 3.x, so results would depend on the day).

    `chat_format`: a `ChatFormat`; "tokenizer" for the tokenizer's own template (error if
    it has none); None for the tokenizer's template when it has one, else
    `LLAMA3_CHAT_FORMAT` (checked against the vocabulary: its markers must be single
    special tokens). Raises ValueError when the result has a misplaced or repeated BOS.
    """
    return encode_revision_prompt(
        tokenizer, problem, (), system_prompt=system_prompt, chat_format=chat_format, date_string=date_string
    )


def encode_revision_prompt(
    tokenizer: Any,
    problem: str,
    previous_attempts: Sequence[str],
    *,
    system_prompt: str | None = LLAMA3_MATH_SYSTEM_PROMPT,
    chat_format: ChatFormat | Literal["tokenizer"] | None = None,
    date_string: str | None = DEFAULT_DATE_STRING,
    instruction: str | None = None,
) -> list[int]:
    """Token ids of a revision prompt: `encode_chat_prompt`'s system and user turns, then
    each of `previous_attempts` (oldest first) as a finished assistant turn, then the start
    of the next assistant turn. The options are `encode_chat_prompt`'s; with no previous
    attempts the ids are its prompt's exactly, so a revision model's first attempt is
    prompted as the plain policy is.

    `instruction`: a user turn after each attempt (e.g. `ttsearch.prompts.REVISION_INSTRUCTION`)
    for instruct models that were not trained to revise; None (a fine-tuned reviser, the
    toy world's): the attempts follow each other.

    The attempts are rendered by the chat template like any message (Llama 3 templates trim
    each one; each ends with the turn's end token). The caller decides how many to keep
    (the paper keeps the last 4).
    """
    messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    messages.append({"role": "user", "content": problem})
    if instruction is not None and not instruction.strip():
        raise ValueError("the revision instruction is empty: give its text, or None for none")
    for attempt in previous_attempts:
        messages.append({"role": "assistant", "content": attempt})
        if instruction is not None:
            messages.append({"role": "user", "content": instruction})

    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat_format == "tokenizer" or (chat_format is None and has_template):
        if not has_template:
            raise ValueError("chat_format='tokenizer' but the tokenizer has no chat template")
        extra = {} if date_string is None else {"date_string": date_string}
        result = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **extra)
        # transformers 5 returns a BatchEncoding, 4.x a plain list.
        ids = list(result["input_ids"] if isinstance(result, Mapping) else result)
    else:
        fmt = LLAMA3_CHAT_FORMAT if chat_format is None else chat_format
        if chat_format is None:
            _check_markers(tokenizer, fmt)
        ids = list(tokenizer.encode(render_chat_format(fmt, messages), add_special_tokens=False))
    _check_bos(tokenizer, ids)
    return ids


@dataclass(frozen=True, slots=True)
class PromptFormat:
    """How a policy renders its prompts: one place for the options that `encode_chat_prompt`
    and `encode_revision_prompt` share (the in-process and the server policy both hold one)."""

    system_prompt: str | None = LLAMA3_MATH_SYSTEM_PROMPT
    chat_format: ChatFormat | Literal["tokenizer"] | None = None
    date_string: str | None = DEFAULT_DATE_STRING
    revision_instruction: str | None = None

    def problem(self, tokenizer: Any, problem: str) -> list[int]:
        return encode_chat_prompt(
            tokenizer,
            problem,
            system_prompt=self.system_prompt,
            chat_format=self.chat_format,
            date_string=self.date_string,
        )

    def revision(self, tokenizer: Any, problem: str, attempts: Sequence[str]) -> list[int]:
        return encode_revision_prompt(
            tokenizer,
            problem,
            attempts,
            system_prompt=self.system_prompt,
            chat_format=self.chat_format,
            date_string=self.date_string,
            instruction=self.revision_instruction,
        )


def _check_markers(tokenizer: Any, fmt: ChatFormat) -> None:
    """The fallback format only makes sense if its markers are special tokens of this vocab."""
    for marker in (fmt.bos, fmt.turn_start.split("{role}")[0], fmt.turn_end):
        if marker and len(tokenizer.encode(marker, add_special_tokens=False)) != 1:
            raise ValueError(
                f"the tokenizer has no chat template and {marker!r} is not one token in its "
                "vocabulary, so the built-in Llama 3 format does not fit; pass chat_format="
            )


def _check_bos(tokenizer: Any, ids: list[int]) -> None:
    """At most one BOS, at position 0; and exactly one if the tokenizer adds BOS itself."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if not ids:
        raise ValueError("the templated prompt is empty")
    if bos is None:
        return
    count = ids.count(bos)
    expects_bos = tokenizer.encode("x")[:1] == [bos]  # the model was trained with BOS
    if count > 1 or (count == 1 and ids[0] != bos) or (expects_bos and count == 0):
        raise ValueError(
            f"templated prompt has {count} BOS token(s) (id {bos}), first token {ids[0]}; "
            f"expected {'exactly one' if expects_bos else 'at most one'}, at the start "
            "(does the problem text contain the BOS string?)"
        )
