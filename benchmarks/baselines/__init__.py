"""Baselines the throughput benchmark compares ttsearch against, on the same engines."""
