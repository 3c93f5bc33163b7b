"""A step whose text merges with the PRM's step tag in tokenization still gets scored at the tag."""

from __future__ import annotations

from dataclasses import replace

from ttsearch.backends.prm_formats import MATH_SHEPHERD, PrmEncoder
from ttsearch.toy.tokenizer import STEP_TAG, build_tokenizer


def test_step_ending_in_a_merging_token_keeps_its_score_position() -> None:
    tokenizer = build_tokenizer()  # has a " = " token: "... =" + " ки" would lose the tag
    fmt = replace(MATH_SHEPHERD, step_tag=STEP_TAG)
    encoder = PrmEncoder(fmt, tokenizer)
    steps = ["## Step 1: 5 + 3 = 8", "## Step 2: 8 - 2 ="]  # the second step was cut short
    inp = encoder.encode("Compute 5 + 3 - 2.", steps)
    assert len(inp.score_positions) == 2
    assert all(inp.token_ids[p] == encoder.anchor_id for p in inp.score_positions)
    merged = tokenizer.encode("## Step 2: 8 - 2 =" + STEP_TAG, add_special_tokens=False)
    assert merged[-1] != encoder.anchor_id  # the case this guards against does occur
    # the ordinary step is encoded exactly as the whole text would be
    first = inp.token_ids[: inp.score_positions[0] + 1]
    whole = tokenizer.encode("Compute 5 + 3 - 2. ## Step 1: 5 + 3 = 8" + STEP_TAG, add_special_tokens=True)
    assert list(first) == whole
