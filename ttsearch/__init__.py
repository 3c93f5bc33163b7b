"""ttsearch: test-time compute scaling for LLM math reasoning."""

__version__ = "0.1.0"
