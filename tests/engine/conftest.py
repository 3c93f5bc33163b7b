"""Fixtures for the engine tests: the real Llama 3 and Qwen2 tokenizers, loaded once per
test module (a module may change its copy, e.g. add a PRM's step token)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def _load(path: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="module")
def llama3(llama3_tokenizer_dir: Path) -> Any:
    return _load(llama3_tokenizer_dir)


@pytest.fixture(scope="module")
def qwen2(qwen2_tokenizer_dir: Path) -> Any:
    return _load(qwen2_tokenizer_dir)
