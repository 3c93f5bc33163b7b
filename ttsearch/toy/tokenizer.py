"""The toy models' tokenizer: a ~130-token vocabulary with the Llama 3 chat conventions.

It is a `tokenizers` WordLevel model behind a regex pre-tokenizer that cuts text into the
longest vocabulary pieces: the fixed phrases of the solution format ("## Step ",
" + ", "Therefore, the final answer is: $\\boxed{", ...) are single tokens, and every
printable ASCII character is a token of its own, so any ASCII text round-trips through
`encode` / `decode`. Digits are single characters.

Conventions copied from Llama 3 so that the project's code treats the toy like the real
models: "\\n\\n" is ONE token (steps end there), `<|begin_of_text|>` is BOS and is
prepended by `encode`, `<|eot_id|>` ends the assistant turn (the EOS), and the chat
template is Llama 3's header format. The PRM reuses the vocabulary: " ки" is the
Math-Shepherd step tag and "+" / "-" (distinct from the operator tokens " + " / " - ")
are its label tokens.
"""

from __future__ import annotations

import re
import string
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "BOS",
    "EOS",
    "MINUS",
    "PAD",
    "PLUS",
    "STEP_TAG",
    "TOY_CHAT_TEMPLATE",
    "TOY_SYSTEM_PROMPT",
    "build_tokenizer",
]

# The toy policy is trained with exactly this system prompt; the long Llama 3 math prompt
# would only make every sequence 5x longer for a model that cannot read it.
TOY_SYSTEM_PROMPT = "Solve step by step."

BOS = "<|begin_of_text|>"
EOS = "<|eot_id|>"  # end of the assistant turn: what a solution ends with
PAD = "<|pad|>"
STEP_TAG = " ки"  # Math-Shepherd's step tag (one token in Llama 3's vocabulary too)
PLUS = "+"  # PRM label tokens
MINUS = "-"

_SPECIAL_TOKENS = [
    BOS,
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    EOS,
    PAD,
    "<|unk|>",
]
# Multi-character pieces; anything else is cut into single characters.
_PHRASES = [
    "Therefore, the final answer is: $\\boxed{",
    "}$. I hope it is correct.",
    "## Step ",
    "Compute ",
    " + ",
    " - ",
    " = ",
    ": ",
    "\n\n",
    STEP_TAG,
    "system",
    "user",
    "assistant",
    "Solve",
    " step",
    " by",
]
_CHARS = sorted(set(string.printable) - set("\x0b\x0c"))  # printable ASCII, \t, \n, \r

# Llama 3's template, less its date lines: BOS once, then per message
# <|start_header_id|>role<|end_header_id|>\n\n content (trimmed) <|eot_id|>; the generation
# prompt is the assistant header followed by "\n\n".
TOY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] | trim }}{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh toy tokenizer (deterministic: same ids every time); save it with
    `save_pretrained` next to a model."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = _SPECIAL_TOKENS + _PHRASES + [c for c in _CHARS if c not in _PHRASES]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    assert len(vocab) == len(pieces), "duplicate vocabulary piece"

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    # Longest phrase first: regex alternation takes the first alternative that matches.
    phrases = sorted(_PHRASES, key=len, reverse=True)
    pattern = "|".join(re.escape(p) for p in phrases) + r"|[\s\S]"
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    tok.decoder = decoders.Fuse()  # concatenate pieces as they are (no spaces added)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _SPECIAL_TOKENS])
    bos_id = vocab[BOS]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token="<|unk|>",
        chat_template=TOY_CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
