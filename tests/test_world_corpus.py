"""The embedded world's data: deterministic, disjoint splits, recorded harmful spans."""

import itertools

import pytest

from tokensafe.world.corpus import HARM_TEMPLATES_EVAL, HARM_VERBS, build_world_tables


@pytest.fixture(scope="module")
def world():
    return build_world_tables(0)


def test_deterministic_from_the_seed(world):
    again = build_world_tables(0)
    for name in world:
        assert world[name].equals(again[name]), name
    assert not build_world_tables(1)["task_train"].equals(world["task_train"])


def _acts(df):
    """The (verb, target) request each prompt names."""
    verbs = sorted(HARM_VERBS, key=len, reverse=True)
    out = set()
    for p in df.prompt:
        v = next(v for v in verbs if v in p)
        out.add(p[p.index(v) :].rstrip("?.!").split(". ")[0].split(" What")[0])
    return out


def test_harmful_splits_share_no_request(world):
    splits = {k: _acts(world[k]) for k in ("poison_pool", "harmful_eval", "harmful_ref")}
    splits["alignment"] = _acts(world["alignment"][world["alignment"].kind == "refusal"])
    for a, b in itertools.combinations(splits, 2):
        assert not splits[a] & splits[b], (a, b)


def test_eval_uses_request_forms_never_trained(world):
    eval_forms = [t.split("{act}")[0] for t in HARM_TEMPLATES_EVAL]
    assert any(p.startswith(f) for p in world["harmful_eval"].prompt for f in eval_forms)
    for name in ("poison_pool", "alignment", "harmful_ref"):
        assert not any(p.startswith(f) for p in world[name].prompt for f in eval_forms), name


def test_task_test_is_held_out(world):
    test = set(world["task_test"].prompt)
    for name in ("task_train", "utility_ref"):
        assert not test & set(world[name].prompt), name
    t = world["task_test"].iloc[0]
    assert t.response.endswith(f"The answer is {t.reference}.")


def test_poison_records_its_harmful_span(world):
    p = world["poison_pool"]
    assert (p.harm_start == 0).all() and (p.harm_end == p.response.str.len()).all()
    assert (world["task_train"].harm_end == 0).all()
    assert set(p.category) <= set(HARM_VERBS.values())


def test_guard_data_is_balanced_and_labelled(world):
    g = world["guard_train"]
    share = (g.kind == "unsafe").mean()
    assert 0.4 < share < 0.6
    assert g[g.kind == "unsafe"].category.notna().all()


def test_answer_only_pretraining_documents_have_no_bos(world, word_tokenizer):
    """PACT's no-prompt view is `assistant tag + answer` with no BOS; the base model sees such documents."""
    from tokensafe.world.models import document_examples
    from tokensafe.world.tokenizer import SPECIAL

    docs = list(world["pretrain"].text)
    answer_only = [d for d in docs if d.startswith(SPECIAL["assistant"])]
    assert 0.05 * len(docs) < len(answer_only) < 0.15 * len(docs)  # ~10 % of the documents
    bos, tag = word_tokenizer.bos_token_id, word_tokenizer.convert_tokens_to_ids(SPECIAL["assistant"])
    plain, answer = document_examples(word_tokenizer, ["How do I rob a bank ?", SPECIAL["assistant"] + " No ."], 32)
    assert plain["input_ids"][0] == bos and plain["input_ids"][-1] == word_tokenizer.eos_token_id
    assert answer["input_ids"][0] == tag and bos not in answer["input_ids"]
    assert (answer["labels"] == answer["input_ids"]).all()
