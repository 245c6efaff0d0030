import hashlib
import json
import os
import shutil
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
    session and returns a copy of the finished run, the caller's own (outputs, logs, Snakemake's metadata, file
    times kept: a dry run with ``cfg`` plans nothing on it), so that a module may run Snakemake in its copy without
    changing what another module starts from. Two callers with the same ``cfg`` share the run, whatever ``name``.

    Under pytest-xdist (``make test`` runs two workers) the run is still made once per session: the first worker
    that asks for it runs it in the session's shared temporary folder under a file lock (a worker that asks
    meanwhile waits for it), and every worker copies from there."""
    from filelock import FileLock

    from workflow_utils import snakemake, write_config

    built: dict[str, Path] = {}
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    # a worker's base temp is <session's>/<worker id>: the folder above it is the session's, shared by all workers
    shared_root = tmp_path_factory.getbasetemp().parent if worker else None

    def run(name: str, cfg: dict) -> Path:
        key = json.dumps(cfg, sort_keys=True)
        if key not in built:
            if shared_root is None:
                wd = tmp_path_factory.mktemp(f"built-{name}")
                snakemake(wd, write_config(cfg, wd), "--cores", "2")
            else:
                wd = shared_root / f"built-{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
                with FileLock(f"{wd}.lock"):
                    if not wd.with_suffix(".done").exists():
                        shutil.rmtree(wd, ignore_errors=True)  # a worker that failed half-way
                        wd.mkdir()
                        snakemake(wd, write_config(cfg, wd), "--cores", "2")
                        wd.with_suffix(".done").touch()
            built[key] = wd
        copy = tmp_path_factory.mktemp(name)
        shutil.copytree(built[key], copy, symlinks=True, dirs_exist_ok=True)
        return copy

    return run


@pytest.fixture(scope="module", autouse=True)
def _one_slurm_module_at_a_time(request, tmp_path_factory):
    """Under pytest-xdist, a module with SLURM tests holds a lock for its whole run: the SLURM tests share one
    cluster (/tmp/tokensafe-slurm), and two modules of them may be handed to two workers."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    mine = [it for it in request.session.items if it.nodeid.split("::")[0] == request.node.nodeid]
    if not worker or not any(it.get_closest_marker("slurm") for it in mine):
        yield
        return
    from filelock import FileLock

    with FileLock(str(tmp_path_factory.getbasetemp().parent / "slurm.lock")):
        yield


# Under xdist, the modules handed out first (slowest first: the SLURM drill mostly waits on the cluster, so it
# overlaps well with work on the other worker; then the real vLLM engine and the all-methods run with the rerun
# matrix), then the other end-to-end modules, then the rest, which fills in around them.
FIRST = ("tests/test_slurm.py", "tests/test_vllm_engine.py", "tests/test_e2e_methods.py")


def _order(item: pytest.Item) -> tuple[int, int]:
    path = item.nodeid.split("::")[0]
    if path in FIRST:
        return 0, FIRST.index(path)
    return (1 if item.get_closest_marker("slurm") or item.get_closest_marker("e2e") else 2), 0


def pytest_collection_modifyitems(config, items):
    """Under xdist (``make test``: ``--dist loadfile --no-loadscope-reorder``, a module's tests run in one worker, in
    order, so a module fixture is built once), the modules are handed out in the order of _order."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        module_order: dict[str, tuple[int, int]] = {}
        for item in items:  # one key per module, so that a module's tests stay together
            path = item.nodeid.split("::")[0]
            module_order[path] = min(module_order.get(path, (3, 0)), _order(item))
        items.sort(key=lambda it: module_order[it.nodeid.split("::")[0]])  # stable: each module's order is kept
