"""Texts inside a model's chat template: one place for the user turn, the assistant turn, and the rule that
a templated text is encoded without the tokenizer's own special tokens (the template writes them)."""

from __future__ import annotations


class NoChatTemplateError(ValueError):
    """The tokenizer carries no chat template (its GGUF/HF files have none)."""


def has_chat_template(tokenizer) -> bool:
    return getattr(tokenizer, "chat_template", None) is not None


def chat_text(tokenizer, user: str, assistant: str | None = None, open_answer: bool = False) -> str:
    """The user's turn, then the assistant's: closed (`assistant` given), left open after its text
    (`open_answer`: the next token continues it, as when reading the answer letter), or just opened
    (`assistant` None: the generation prompt)."""
    if not has_chat_template(tokenizer):
        raise NoChatTemplateError("this model's tokenizer has no chat template (its GGUF/HF files carry none)")
    messages = [{"role": "user", "content": user}]
    if assistant is None:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    messages.append({"role": "assistant", "content": assistant})
    return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=open_answer)
