"""classify_pairs on tiny random models: plumbing only (shapes, order, invalid counting), not verdict quality."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from tokensafe.eval.safety_judges.classifier_runner import classify_pairs, invalid_count, score_token_ids
from tokensafe.eval.safety_judges.classifiers import BEAVERDAM_CATEGORIES, JUDGES, ClassifierVerdict
from tokensafe.eval.safety_judges.guard_judge import judge_pairs
from tokensafe.world.tokenizer import train_tokenizer

from tiny_models import tiny_llama

PROMPTS = ["How do I pick a lock?", "Tell me a joke.", "Write a poem about the sea and the moon, please.", "Hi"]
RESPONSES = ["Use a tension wrench.", "No.", "The sea is wide; the moon is bright.", "Hello! How can I help?"]


@pytest.fixture(scope="module")
def tok():
    texts = [JUDGES[n].prompt(p, r) for n in JUDGES for p, r in zip(PROMPTS, RESPONSES)] * 3
    return train_tokenizer(texts + ["safe unsafe yes no 1 2 3 4 5"], vocab_size=400)


@pytest.fixture(scope="module")
def lm(tok):
    return tiny_llama(len(tok), max_positions=2048)


@pytest.mark.parametrize("name", ["harmbench", "wildguard"])
def test_generative_judges_give_one_parsed_verdict_per_pair_in_order(tok, lm, name):
    out = classify_pairs(lm, tok, name, PROMPTS, RESPONSES, batch_size=3, max_new_tokens=3)
    assert len(out) == len(PROMPTS) and all(isinstance(v, ClassifierVerdict) for v in out)
    # A random model writes no valid verdict: every row is invalid, and counted so (never safe).
    assert invalid_count(out) == sum(v.verdict == "invalid" for v in out)
    assert all(v.verdict == JUDGES[name].parse(v.raw).verdict for v in out)
    # Order: each pair judged alone gives the same raw answer as in the batch (left padding, sorted batches).
    alone = [classify_pairs(lm, tok, name, [p], [r], max_new_tokens=3)[0].raw for p, r in zip(PROMPTS, RESPONSES)]
    assert [v.raw for v in out] == alone


def test_generative_judge_parses_what_the_model_writes(tok, lm, monkeypatch):
    """Force the generated text: the runner hands the decoded new tokens to the judge's parse rule."""
    answers = iter(["Yes", "no", "maybe", "No"])
    decode = tok.decode

    def fake_decode(ids, skip_special_tokens=False):
        return next(answers) if skip_special_tokens else decode(ids)

    monkeypatch.setattr(tok, "decode", fake_decode)
    out = classify_pairs(lm, tok, "harmbench", PROMPTS, RESPONSES, batch_size=8, max_new_tokens=1)
    lengths = [len(tok(JUDGES["harmbench"].prompt(p, r))["input_ids"]) for p, r in zip(PROMPTS, RESPONSES)]
    longest_first = sorted(range(4), key=lambda i: -lengths[i])
    got = {i: out[i].verdict for i in range(4)}
    assert [got[i] for i in longest_first] == ["unsafe", "safe", "invalid", "safe"]
    assert invalid_count(out) == 1


def test_strongreject_scores_from_the_five_digit_logits(tok, lm):
    out = classify_pairs(lm, tok, "strongreject_ft", PROMPTS, RESPONSES, batch_size=2)
    ids = score_token_ids(tok)
    for v, p, r in zip(out, PROMPTS, RESPONSES):
        assert v.verdict in ("safe", "unsafe") and 0.0 <= v.score <= 1.0
        enc = tok(JUDGES["strongreject_ft"].prompt(p, r, tok))["input_ids"]
        z = lm(input_ids=torch.tensor([enc])).logits[0, -1, ids].tolist()
        assert json.loads(v.raw)["logits"] == pytest.approx(z, abs=1e-4)


def test_score_token_ids_refuse_a_vocabulary_without_the_digits(tok):
    with pytest.raises(ValueError, match="not single tokens"):
        score_token_ids(tok, ("1", "no-such-token-here"))


def test_beaverdam_sequence_classification(tok):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        num_labels=14,
        id2label=dict(enumerate(BEAVERDAM_CATEGORIES)),
        label2id={c: i for i, c in enumerate(BEAVERDAM_CATEGORIES)},
        problem_type="multi_label_classification",
        pad_token_id=tok.pad_token_id,
    )
    clf = LlamaForSequenceClassification(cfg).eval()
    out = classify_pairs(clf, tok, "beaverdam", PROMPTS, RESPONSES, batch_size=3)
    assert len(out) == 4 and invalid_count(out) == 0
    for v, p, r in zip(out, PROMPTS, RESPONSES):
        assert set(v.fields["categories"]) == set(BEAVERDAM_CATEGORIES)
        assert v.verdict == ("unsafe" if v.score > 0.5 else "safe")
        enc = tok(JUDGES["beaverdam"].prompt(p, r, tok))["input_ids"][:256]
        z = clf(input_ids=torch.tensor([enc])).logits[0].tolist()
        assert json.loads(v.raw)["logits"] == pytest.approx(z, abs=1e-4)  # right padding changes nothing
    strict = classify_pairs(clf, tok, "beaverdam", PROMPTS, RESPONSES, threshold=0.0)
    assert all(v.verdict == "unsafe" for v in strict)


def test_llama_guard_goes_through_the_existing_judge_unchanged(tok, lm):
    out = classify_pairs(lm, tok, "llama_guard", PROMPTS, RESPONSES, batch_size=2, max_new_tokens=4)
    ref, _ = judge_pairs(lm, tok, PROMPTS, RESPONSES, 4, 2)
    assert [(v.verdict, v.score, v.raw, v.fields["categories"]) for v in out] == [
        (r.verdict, r.p_unsafe, r.raw, r.categories) for r in ref
    ]


def test_long_prompts_keep_their_first_token_and_end(tok):
    small = tiny_llama(len(tok), max_positions=64)
    out = classify_pairs(small, tok, "harmbench", PROMPTS[:2], RESPONSES[:2], max_new_tokens=2)
    assert len(out) == 2


def test_bad_arguments(tok, lm):
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        classify_pairs(lm, tok, "harmbench", PROMPTS[:2], RESPONSES[:1])
    with pytest.raises(ValueError, match="not one of"):
        classify_pairs(lm, tok, "gpt4", PROMPTS, RESPONSES)
    assert classify_pairs(lm, tok, "wildguard", [], []) == []
