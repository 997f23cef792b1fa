"""Prompt templates by name (one table for fine-tuning and for the math evaluation), through the Registry.

    prompt_format("qalign")                    # the Alpaca-style text with {query}
    prompt_format("Q: {query}\nA:")            # a text of your own with {query} is used as it is
    PROMPTS.add("mine", "### Q\n{query}\n### A")  # or register one by name

A template has `{query}` (the question or instruction) and may have `{language}` (the answer language's name).
"""

from __future__ import annotations

from neuronlab.errors import NeuronlabError
from neuronlab.registry import Registry

PROMPTS: Registry[str] = Registry(
    "prompt template",
    str,
    entries={
        "qalign": (  # QAlign / SLAM's Alpaca-style instruction format
            "Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\n{query}\n\n### Response:"
        ),
        "mathoctopus": (
            "Below is an instruction that describes a task. Write a response that appropriately completes "
            "the request in {language}. Please answer in {language}.\n\n### Instruction:\n{query}\n\n"
            "### Response:"
        ),
        "cot": "Question: {query}\nAnswer: Let's think step by step.",
        "plain": "{query}\n",
    },
)


def prompt_format(template: str) -> str:
    """The format text of a registered template, or `template` itself where it is a text with {query}."""
    if "{query}" in template:
        return template
    if template not in PROMPTS:
        raise NeuronlabError(f"unknown template {template!r}: use {PROMPTS.names()} or a text with {{query}}")
    return PROMPTS[template]
