"""Prompt strings. Kept verbatim in one place because results depend on the exact text."""

# Meta's published Llama 3 math prompt, the default system prompt of the HF blog
# "Scaling test-time compute with open models" (and of search-and-learn).
LLAMA3_MATH_SYSTEM_PROMPT = """Solve the following math problem efficiently and clearly:

- For simple problems (2 steps or fewer):
Provide a concise solution with minimal explanation.

- For complex problems (3 steps or more):
Use this step-by-step format:

## Step 1: [Concise description]
[Brief explanation and calculations]

## Step 2: [Concise description]
[Brief explanation and calculations]

...

Regardless of the approach, always conclude with:

Therefore, the final answer is: $\\boxed{answer}$. I hope it is correct.

Where [answer] is just the final number or expression that solves the problem."""

# Qwen2.5-Math-PRM's system prompt (its model card).
QWEN_PRM_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

# A revision instruction for instruct models that were not fine-tuned to revise
# (`revision_instruction`, docs/methods/revisions.md): sent as a user turn after each
# earlier attempt, so the model reads its attempt as something to check and correct.
REVISION_INSTRUCTION = (
    "The solution above may contain a mistake. Check it step by step, find the first wrong step if "
    "there is one, and write a corrected solution in the same format, ending with the final answer."
)

STEP_SEPARATOR = "\n\n"
