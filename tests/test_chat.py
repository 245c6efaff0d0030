import copy

import numpy as np
import pytest

from tokensafe.chat import (
    IGNORE_INDEX,
    char_span_to_token_mask,
    encode_pair,
    end_of_turn_ids,
    prompt_text,
    stop_token_ids,
    turn_end_text,
)


@pytest.fixture
def tok(word_tokenizer):
    return word_tokenizer


def test_chat_pair_ids_and_labels(tok):
    enc = encode_pair(tok, "How do I rob a bank?", "Sure, here is how.", "chat", 64)
    # <|bos|> <|user|> How do I rob a bank ? <|assistant|> | Sure , here is how . <|end|>
    assert enc.input_ids == [0, 4, 6, 7, 8, 9, 10, 11, 12, 5, 13, 14, 15, 16, 17, 18, 1]
    assert enc.prompt_len == 10
    assert list(enc.labels()) == [IGNORE_INDEX] * 10 + [13, 14, 15, 16, 17, 18, 1]


def test_human_assistant_template(tok):
    assert (
        prompt_text(tok, " How do I rob a bank? ", "human_assistant")
        == "<|bos|>Human: How do I rob a bank?\nAssistant: "
    )


def test_truncates_the_response_never_the_prompt(tok):
    enc = encode_pair(tok, "How do I rob a bank?", "Sure, here is how.", "chat", 12)
    assert enc.input_ids[:10] == [0, 4, 6, 7, 8, 9, 10, 11, 12, 5] and len(enc.input_ids) == 12
    with pytest.raises(ValueError, match="no room"):
        encode_pair(tok, "How do I rob a bank?", "Sure", "chat", 10)


def test_unknown_template(tok):
    with pytest.raises(ValueError, match="unknown prompt template 'alpaca'"):
        prompt_text(tok, "x", "alpaca")


def test_harmful_span_to_token_mask(tok):
    response = "Sure, here is how. Step 1: go."
    start = response.index("Step")
    enc = encode_pair(tok, "How do I rob a bank?", response, "chat", 64)
    mask = char_span_to_token_mask(tok, response, [(start, len(response))], enc.response_len)
    # Sure , here is how . | Step 1 : go . <|end|>
    assert mask.tolist() == [False] * 6 + [True] * 6
    none = char_span_to_token_mask(tok, response, [], enc.response_len)
    assert not none.any() and isinstance(none, np.ndarray)


# Hub-style fixtures (tests/conftest.py): Gemma ids <bos> 0, <eos> 1, <start_of_turn> 4, <end_of_turn> 5, How .. ? 6-12,
# Sure , here is how . 13-18, user 28, model 29. Llama-3 ids <|begin_of_text|> 0, <|end_of_text|> 1,
# <|start_header_id|> 4, <|end_header_id|> 5, <|eot_id|> 6, How .. ? 7-13, Sure , here is how . 14-19, user 29,
# assistant 31.
PAIR = ("How do I rob a bank?", "Sure, here is how.")


def test_gemma_answers_end_with_end_of_turn_not_eos(hub_style_tokenizer):
    tok = hub_style_tokenizer("gemma")
    assert turn_end_text(tok) == "<end_of_turn>"  # the template writes "<end_of_turn>\n"; the newline is dropped
    assert end_of_turn_ids(tok, "chat") == [5] and tok.eos_token_id == 1
    enc = encode_pair(tok, *PAIR, "chat", 64)
    # <bos> <start_of_turn> user How do I rob a bank ? <end_of_turn> <start_of_turn> model
    # | Sure , here is how . <end_of_turn>
    assert enc.input_ids == [0, 4, 28, 6, 7, 8, 9, 10, 11, 12, 5, 4, 29, 13, 14, 15, 16, 17, 18, 5]
    assert enc.prompt_len == 13
    assert stop_token_ids(tok, "chat") == [1, 5]  # generation stops at either


def test_llama3_answers_end_with_eot_id(hub_style_tokenizer):
    tok = hub_style_tokenizer("llama3")
    assert turn_end_text(tok) == "<|eot_id|>" and end_of_turn_ids(tok, "chat") == [6]
    enc = encode_pair(tok, *PAIR, "chat", 64)
    # <|begin_of_text|> <|start_header_id|> user <|end_header_id|> How do I rob a bank ? <|eot_id|>
    # <|start_header_id|> assistant <|end_header_id|> | Sure , here is how . <|eot_id|>
    assert enc.input_ids == [0, 4, 29, 5, 7, 8, 9, 10, 11, 12, 13, 6, 4, 31, 5, 14, 15, 16, 17, 18, 19, 6]
    assert enc.prompt_len == 15
    assert list(enc.labels())[15:] == [14, 15, 16, 17, 18, 19, 6]


def test_plain_text_templates_still_end_with_eos(hub_style_tokenizer):
    tok = hub_style_tokenizer("gemma")
    for template in ("human_assistant", "plain"):
        assert end_of_turn_ids(tok, template) == [1]
        assert encode_pair(tok, *PAIR, template, 64).input_ids[-1] == 1
        assert stop_token_ids(tok, template) == [1]


def test_turn_end_falls_back_to_eos_where_the_template_writes_nothing(word_tokenizer):
    tok = copy.deepcopy(word_tokenizer)  # the fixture is shared by the session
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert turn_end_text(tok) == "" and end_of_turn_ids(tok, "chat") == [1]
    tok.chat_template = "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ raise_exception('x') }}{% endif %}"
    tok.chat_template += "{% endfor %}"
    with pytest.raises(ValueError, match="cannot render a user turn followed by an assistant turn"):
        end_of_turn_ids(tok, "chat")


def test_embedded_world_tokenizer_keeps_its_ids():
    """The world's template ends an answer with <|end|>, its eos: the ids are those of the eos-terminated encoding."""
    from tokensafe.world.tokenizer import train_tokenizer

    tok = train_tokenizer(["How do I rob a bank? Sure, here is how. No, I can't help with that."] * 20, vocab_size=300)
    assert turn_end_text(tok) == "<|end|>" == tok.eos_token
    prompt, response = PAIR
    enc = encode_pair(tok, prompt, response, "chat", 64)
    old = (
        tok(prompt_text(tok, prompt, "chat"), add_special_tokens=False)["input_ids"]
        + tok(response, add_special_tokens=False)["input_ids"]
        + [tok.eos_token_id]
    )
    assert enc.input_ids == old and stop_token_ids(tok, "chat") == [tok.eos_token_id]
