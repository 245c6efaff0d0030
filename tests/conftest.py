import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


WORDS = [
    "<|bos|>",
    "<|end|>",
    "<|pad|>",
    "<|unk|>",
    "<|user|>",
    "<|assistant|>",
    "How",
    "do",
    "I",
    "rob",
    "a",
    "bank",
    "?",
    "Sure",
    ",",
    "here",
    "is",
    "how",
    ".",
    "Human",
    ":",
    "Assistant",
    "Step",
    "1",
    "go",
    "No",
    "2",
    "3",
]


@pytest.fixture(scope="session")
def word_tokenizer():
    """A word-level tokenizer with the embedded chat template: every word is one token, easy to count by hand."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tokensafe.world.tokenizer import CHAT_TEMPLATE

    vocab = {w: i for i, w in enumerate(WORDS)}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=t,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


# Public chat templates, shortened to one user and one assistant turn: Gemma-2-it's (a turn ends with
# <end_of_turn>, which is not its eos <eos>) and Llama-3-Instruct's (a turn ends with <|eot_id|>).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
HUB_STYLE = {
    "gemma": dict(bos="<bos>", eos="<eos>", specials=["<start_of_turn>", "<end_of_turn>"], template=GEMMA_TEMPLATE),
    # eos as in the base Llama-3 tokenizer (<|end_of_text|>), so that the turn end must come from the template
    "llama3": dict(
        bos="<|begin_of_text|>",
        eos="<|end_of_text|>",
        specials=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        template=LLAMA3_TEMPLATE,
    ),
}


@pytest.fixture(scope="session")
def hub_style_tokenizer():
    """``hub_style_tokenizer("gemma" | "llama3")``: a word-level tokenizer over WORDS with that family's special
    tokens and chat template, which (like the hub tokenizers) writes its BOS when called with
    ``add_special_tokens=True``. Ids: the specials in order bos, eos, <pad>, <unk>, family specials, then WORDS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    def make(family: str):
        f = HUB_STYLE[family]
        specials = [f["bos"], f["eos"], "<pad>", "<unk>", *f["specials"]]
        words = [w for w in WORDS if not w.startswith("<|")] + ["user", "model", "assistant", "User"]
        vocab = {w: i for i, w in enumerate(specials + words)}
        t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
        t.post_processor = processors.TemplateProcessing(
            single=f"{f['bos']} $A", pair=f"{f['bos']} $A $B", special_tokens=[(f["bos"], 0)]
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=t,
            bos_token=f["bos"],
            eos_token=f["eos"],
            pad_token="<pad>",
            unk_token="<unk>",
            additional_special_tokens=f["specials"],
        )
        fast.chat_template = f["template"]
        return fast

    return make


@pytest.fixture
def tiny_lm(word_tokenizer):
    from tiny_models import tiny_llama

    return tiny_llama(len(word_tokenizer), pad_token_id=word_tokenizer.pad_token_id)


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory):
    """The e2e tests' one fixture: ``micro_run(name, cfg)`` runs the whole DAG on ``cfg`` (a micro world) once per
    session and returns the run folder; later tests dry-run variations against its results."""
    from workflow_utils import snakemake, write_config

    done: dict[str, Path] = {}

    def run(name: str, cfg: dict) -> Path:
        key = json.dumps(cfg, sort_keys=True)
        if key not in done:
            wd = tmp_path_factory.mktemp(name)
            snakemake(wd, write_config(cfg, wd), "--cores", "2")
            done[key] = wd
        return done[key]

    return run
