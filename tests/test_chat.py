import numpy as np
import pytest

from tokensafe.chat import IGNORE_INDEX, char_span_to_token_mask, encode_pair, prompt_text


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
