"""Causal-LM SFT records in the formats TRL's SFTTrainer understands.

Prompt/response rows become prompt-completion records (conversational when the tokenizer has a chat template),
so TRL applies the template and masks the loss to the response tokens; ``text`` rows become plain LM records.
"""

from __future__ import annotations

from typing import Any, Optional

from strato_peft.config.schema import TaskConfig


def uses_chat_template(tokenizer: Any, task: TaskConfig) -> bool:
    """Whether prompts are formatted with the tokenizer's chat template."""
    return bool(task.use_chat_template and getattr(tokenizer, "chat_template", None))


def sft_record(row: dict[str, Any], chat: bool, system_prompt: Optional[str]) -> dict[str, Any]:
    """One canonical row as a TRL record: {'prompt', 'completion'} or {'text'}."""
    if "text" in row and "prompt" not in row:
        return {"text": str(row["text"])}
    prompt, response = str(row["prompt"]), str(row["response"])
    if chat:
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else [])
        messages.append({"role": "user", "content": prompt})
        return {"prompt": messages, "completion": [{"role": "assistant", "content": response}]}
    head = f"{system_prompt}\n\n" if system_prompt else ""
    return {"prompt": f"{head}{prompt}\n", "completion": f"{response}"}


def sft_records(rows: list[dict[str, Any]], tokenizer: Any, task: TaskConfig) -> list[dict[str, Any]]:
    """All rows as TRL records."""
    chat = uses_chat_template(tokenizer, task)
    return [sft_record(r, chat, task.system_prompt) for r in rows]
