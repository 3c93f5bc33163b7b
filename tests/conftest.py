"""Shared test fixtures: where the read-only shared data lives (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("TTSEARCH_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DIR} (set TTSEARCH_SHARED)")
    return SHARED_DIR


def _tokenizer_dir(shared_dir: Path, name: str) -> Path:
    path = shared_dir / "tokenizers" / name
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"{name} tokenizer not found at {path}")
    return path


@pytest.fixture(scope="session")
def llama3_tokenizer_dir(shared_dir: Path) -> Path:
    """The Llama 3 tokenizer's HF files (no chat template; <|eot_id|> ends a turn)."""
    return _tokenizer_dir(shared_dir, "llama3")


@pytest.fixture(scope="session")
def qwen2_tokenizer_dir(shared_dir: Path) -> Path:
    """The Qwen2 tokenizer's HF files (with its ChatML template)."""
    return _tokenizer_dir(shared_dir, "qwen2")
