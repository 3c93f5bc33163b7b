"""PRM inputs with SentencePiece-style tokenizers (Llama 2 / Mistral, e.g. math-shepherd-mistral-7b-prm).

Such tokenizers put "▁" in front of every `encode()` (and after every special token), so
encoding the pieces of a PRM input one by one would insert a spurious "▁" at each cut.
The tokenizers here are built in memory with the `tokenizers` library (no download): a
small BPE vocabulary (characters plus a few merges such as "▁ки", "▁+") behind the three
ways such tokenizers are written: a Metaspace pre-tokenizer that splits on "▁", one that
does not, and a Prepend + Replace normalizer with no pre-tokenizer.
"""

from __future__ import annotations

import pytest

from tests.engine.test_prm_formats import QUESTION, STEPS, TRICKY_STEPS
from ttsearch.backends.prm_formats import MATH_SHEPHERD, QWEN_PRM, RLHFLOW, PrmEncoder, format_text

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

SPECIALS = [
    "<unk>", "<s>", "</s>",
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<|im_start|>", "<|im_end|>", "<extra_0>",
]  # fmt: skip
MERGES = [("к", "и"), ("▁", "ки"), ("▁", "+"), ("▁", "-"), ("\n", "\n"), ("▁", "\n"), ("i", "s"), ("▁", "is")]
STYLES = ["metaspace-split", "metaspace-whole", "prepend-normalizer"]


def sentencepiece_style_tokenizer(style: str, text_for_alphabet: str):
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    alphabet = sorted(set(text_for_alphabet.replace(" ", "")) | {"▁"})
    vocab = {token: i for i, token in enumerate(SPECIALS + alphabet)}
    for left, right in MERGES:
        vocab.setdefault(left + right, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=MERGES, unk_token="<unk>"))
    if style == "prepend-normalizer":  # how newer transformers conversions write Llama 2
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Strip(" ", 1, 0)])
    else:
        split = style == "metaspace-split"
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=split)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=split)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


FORMATS = [MATH_SHEPHERD, RLHFLOW, QWEN_PRM]
FORMAT_IDS = ["shepherd-tagged", "rlhflow-turns", "qwen-assistant_tags"]
STEP_LISTS = [STEPS, TRICKY_STEPS, TRICKY_STEPS[::-1], ["x"], ["a + b = c", "- 1"]]


@pytest.fixture(scope="module", params=STYLES)
def sp_tokenizer(request):
    texts = [format_text(fmt, QUESTION, steps) for fmt in FORMATS for steps in STEP_LISTS]
    return sentencepiece_style_tokenizer(request.param, "".join(texts) + "+-")


def test_the_tokenizer_prepends_a_metaspace_on_every_encode(sp_tokenizer):
    # The property that broke piecewise encoding: "\n..." encodes with a leading "▁".
    assert sp_tokenizer.convert_ids_to_tokens(sp_tokenizer.encode("\nx", add_special_tokens=False))[0].startswith("▁")
    assert sp_tokenizer.convert_ids_to_tokens(sp_tokenizer.encode(" ки", add_special_tokens=False))[-1] == "▁ки"


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_ids_equal_whole_text_tokenization(fmt, sp_tokenizer):
    encoder = PrmEncoder(fmt, sp_tokenizer)
    for steps in STEP_LISTS:
        inp = encoder.encode(QUESTION, steps)
        whole = sp_tokenizer.encode(format_text(fmt, QUESTION, steps), add_special_tokens=fmt.add_special_tokens)
        assert sp_tokenizer.convert_ids_to_tokens(list(inp.token_ids)) == sp_tokenizer.convert_ids_to_tokens(whole)
        assert len(inp.score_positions) == len(steps)
        assert all(inp.token_ids[p] == encoder.anchor_id for p in inp.score_positions)


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_prefix_of_steps_gives_prefix_of_ids(fmt, sp_tokenizer):
    encoder = PrmEncoder(fmt, sp_tokenizer)
    full = encoder.encode(QUESTION, TRICKY_STEPS)
    for k in range(1, len(TRICKY_STEPS)):
        part = encoder.encode(QUESTION, TRICKY_STEPS[:k])
        assert part.score_positions == full.score_positions[:k]
        end = part.score_positions[-1] + 1
        assert part.token_ids[:end] == full.token_ids[:end]


def test_math_shepherd_labels_are_the_models_own_tokens(sp_tokenizer):
    # math-shepherd's reference reads tokenizer.encode("+ -")[1:], i.e. "▁+" and "▁-".
    encoder = PrmEncoder(MATH_SHEPHERD, sp_tokenizer)
    assert encoder.label_token_strings == ["▁+", "▁-"]
