"""vLLM servers over HTTP (OpenAI-compatible API), with a client-side replica pool."""
