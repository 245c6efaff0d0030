"""Prompt templates and the one tokenisation function shared by scoring, training and generation.

Every stage that needs token ids for a (prompt, response) pair calls :func:`encode_pair`, so the ids
a loss dump scores are exactly the ids a selective fine-tune trains on (docs/methods.md §A12). The prompt and the
response are tokenised separately and concatenated, which keeps the response boundary exact whatever
the tokenizer's merges would do across it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100

# name -> (description). The template name is recorded in every result row.
TEMPLATES = {
    "chat": "the tokenizer's own chat template, one user turn, generation prompt appended (PACT)",
    "human_assistant": "'Human: {prompt}\\nAssistant: ' with the tokenizer's BOS (TOSS / SEAL)",
    "plain": "'User: {prompt}\\n\\nAssistant: ' (PACT's view of a base model without a chat template)",
}


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example: ``input_ids[:prompt_len]`` is the prompt, the rest the response."""

    input_ids: list[int]
    prompt_len: int

    @property
    def response_len(self) -> int:
        return len(self.input_ids) - self.prompt_len

    def labels(self) -> np.ndarray:
        """Unshifted labels: the response tokens, ``IGNORE_INDEX`` on the prompt."""
        labels = np.asarray(self.input_ids, dtype=np.int64).copy()
        labels[: self.prompt_len] = IGNORE_INDEX
        return labels


def prompt_text(tokenizer, prompt: str, template: str) -> str:
    """The text a model sees before its answer begins."""
    if template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "prompt template 'chat' needs a tokenizer with a chat_template; use 'human_assistant' or 'plain'"
            )
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    if template == "human_assistant":
        bos = tokenizer.bos_token or ""
        return f"{bos}Human: {prompt.strip()}\nAssistant: "
    if template == "plain":
        return f"User: {prompt}\n\nAssistant: "
    raise ValueError(f"unknown prompt template {template!r}; allowed: {', '.join(TEMPLATES)}")


# Stands for an answer when the chat template is rendered to find what it writes after one.
_ANSWER_PROBE = "TOKENSAFEANSWERPROBE"


def turn_end_text(tokenizer) -> str:
    """What the chat template writes right after an assistant message, trailing whitespace removed: Gemma's
    ``<end_of_turn>`` (not its eos ``<eos>``), Llama-3's ``<|eot_id|>``, Qwen's ``<|im_end|>``; "" if nothing."""
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _ANSWER_PROBE}]
    try:
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    except Exception as exc:  # a template's raise_exception, or a Jinja error
        raise ValueError(f"the chat template cannot render a user turn followed by an assistant turn: {exc}") from exc
    if text.count(_ANSWER_PROBE) != 1:
        raise ValueError(f"the chat template does not render an assistant message's content once: {text!r}")
    return text.split(_ANSWER_PROBE, 1)[1].rstrip()


def end_of_turn_ids(tokenizer, template: str) -> list[int]:
    """Token ids that end an answer: with the ``chat`` template what the template writes after an assistant turn
    (:func:`turn_end_text`), else, or where the template writes nothing there, the tokenizer's eos."""
    if template == "chat":
        text = turn_end_text(tokenizer)
        if text:
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token: a response could not be terminated")
    return [int(tokenizer.eos_token_id)]


def stop_token_ids(tokenizer, template: str) -> list[int]:
    """Ids that end generation: the eos and, where the answer ends with one other token (Gemma's
    ``<end_of_turn>``), that token too; a model trained by :func:`encode_pair` stops where it was taught to."""
    ids = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    end = end_of_turn_ids(tokenizer, template)
    if len(end) == 1 and end[0] not in ids:
        ids.append(end[0])
    return ids


def encode_prompt(tokenizer, prompt: str, template: str) -> list[int]:
    return tokenizer(prompt_text(tokenizer, prompt, template), add_special_tokens=False)["input_ids"]


def encode_pair(tokenizer, prompt: str, response: str, template: str, max_length: int) -> Encoded:
    """Tokenise one (prompt, response) pair; the response ends with the end-of-turn token(s) (:func:`end_of_turn_ids`).

    The response is truncated (never the prompt) so that the pair fits ``max_length``; a prompt that
    alone leaves no room for one response token is an error, not a silently empty example.
    """
    prompt_ids = encode_prompt(tokenizer, prompt, template)
    response_ids = tokenizer(response.strip(), add_special_tokens=False)["input_ids"] + end_of_turn_ids(
        tokenizer, template
    )
    room = max_length - len(prompt_ids)
    if room < 1:
        raise ValueError(
            f"prompt of {len(prompt_ids)} tokens leaves no room for a response within max_length={max_length}"
        )
    return Encoded(prompt_ids + response_ids[:room], len(prompt_ids))


def char_span_to_token_mask(tokenizer, response: str, spans: list[tuple[int, int]], n_tokens: int) -> np.ndarray:
    """Mark the response tokens that overlap any character span of ``response`` (e.g. the harmful part).

    Uses the fast tokenizer's offsets for the same call :func:`encode_pair` makes, so the mask lines up
    with the response ids (the appended end-of-turn tokens belong to a span only if a span reaches the end).
    """
    text = response.strip()
    shift = len(response) - len(response.lstrip())
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = np.zeros(n_tokens, dtype=bool)
    for i, (a, b) in enumerate(enc["offset_mapping"][:n_tokens]):
        a, b = a + shift, b + shift
        mask[i] = any(a < e and b > s for s, e in spans)
    if n_tokens > len(enc["input_ids"]):  # the end-of-turn tokens
        mask[len(enc["input_ids"]) :] = any(e >= len(response.rstrip()) for _, e in spans)
    return mask
