import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} is not present (public sample data lives beside the checkout)")
    return SHARED_DATA


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
