"""A tiny offline "toy world" where test-time search measurably helps.

A synthetic multi-step arithmetic task (`task`), a ~120-token tokenizer with the Llama 3
chat conventions (`tokenizer`), and a small trained policy and process reward model
shipped under `ttsearch/assets/toy/` (built by `python -m tools.toy_train`). The models
load in transformers and in vLLM like any Llama checkpoint, so the whole search stack
runs end to end on a CPU, without downloads, on a task where accuracy is checkable.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TOY_ASSETS_DIR", "TOY_POLICY_DIR", "TOY_PRM_DIR"]

TOY_ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets" / "toy"
TOY_POLICY_DIR = TOY_ASSETS_DIR / "policy"
TOY_PRM_DIR = TOY_ASSETS_DIR / "prm"
