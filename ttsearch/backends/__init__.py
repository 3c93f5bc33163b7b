"""Backends: what serves the core's policy and verifier requests.

`vllm/` runs vLLM `AsyncLLM` engines in this process; `http/` talks to vLLM servers (one
or many replicas). What both families share lives here: chat and PRM input formats,
sampling-request checks, problem affinity, PRM score caching and engine start-up.
"""
