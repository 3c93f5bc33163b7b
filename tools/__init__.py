"""Development tools: toy-world training and tiny random-weight models for tests and benchmarks."""
