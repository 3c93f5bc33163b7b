"""In-process vLLM engines (`AsyncLLM`): the policy and the PRM."""
