"""Stage: judge the harmful-prompt responses with one extra classifier judge of the registry.

The judges are :data:`tokensafe.eval.safety_judges.classifiers.JUDGES` other than ``llama_guard`` (the ``judge``
rule's); each runs through :func:`tokensafe.eval.safety_judges.classifier_runner.classify_pairs` with transformers.
The output has one row per harmful prompt: ``prompt_id``, ``verdict`` (``unsafe`` / ``safe`` / ``invalid``: an answer
the published rule cannot read is ``invalid``, never ``safe``), ``score`` (NaN where the judge gives none), ``raw``
(the judge's output, or its logits as JSON) and ``fields`` (judge-specific fields as sorted JSON).
"""

from __future__ import annotations

import json
import logging

import pandas as pd
import torch

from tokensafe.eval.safety_judges.classifier_runner import classify_pairs, invalid_count
from tokensafe.eval.safety_judges.classifiers import ClassifierJudge, get_judge
from tokensafe.io import parquet_metadata, read_parquet, write_parquet
from tokensafe.modelref import load_name
from tokensafe.runtime.job import end_startup, progress

log = logging.getLogger("tokensafe")
CLASSIFIER_COLUMNS = ["prompt_id", "verdict", "score", "raw", "fields"]


def load_classifier(model: str, judge: ClassifierJudge, dtype: str = "auto"):
    """The judge's tokenizer (loaded as its published code loads it) and model (a sequence classifier for
    ``sequence_classification`` judges, else a causal LM); ``model`` is a hub id or a local folder."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from tokensafe.train.lora import resolve_dtype

    hf_logging.disable_progress_bar()
    name = load_name(model)  # a missing local folder fails here, by name; 'hub:' is stripped
    tok = AutoTokenizer.from_pretrained(name, **dict(judge.tokenizer_kwargs))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # masks come from lengths (classify_pairs pads itself)
    auto = AutoModelForSequenceClassification if judge.kind == "sequence_classification" else AutoModelForCausalLM
    clf = auto.from_pretrained(name, dtype=resolve_dtype(dtype))
    if torch.cuda.is_available():
        clf = clf.to("cuda")
    clf.eval()
    end_startup()
    return tok, clf


def run_classifier_judge(
    *,
    generations: str,
    classifier: str,
    model: str,
    out: str,
    batch_size: int = 8,
    dtype: str = "auto",
    threads: int = 1,
) -> None:
    torch.set_num_threads(threads)
    judge = get_judge(classifier)
    if judge.name == "llama_guard":
        raise ValueError("llama_guard is the judge rule's guard (models.guard), not an extra classifier")
    gen = read_parquet(generations, ["set", "prompt_id", "prompt", "response"])
    harmful = gen[gen["set"] == "harmful"].reset_index(drop=True)
    if harmful.empty:
        raise ValueError(f"{generations}: no responses to harmful prompts to judge")
    tok, clf = load_classifier(model, judge, dtype)
    verdicts = classify_pairs(
        clf, tok, judge, list(harmful.prompt), list(harmful.response), batch_size, progress=progress(log, classifier)
    )
    df = pd.DataFrame(
        {
            "prompt_id": harmful.prompt_id.astype("int64"),
            "verdict": [v.verdict for v in verdicts],
            "score": pd.Series([v.score for v in verdicts], dtype="float64"),
            "raw": [v.raw for v in verdicts],
            "fields": [json.dumps(dict(v.fields), sort_keys=True, default=str) for v in verdicts],
        }
    )
    meta = parquet_metadata(generations)
    meta["classifier"] = {
        "name": judge.name,
        "model": model,
        "kind": judge.kind,
        "max_new_tokens": judge.max_new_tokens,
        "batch_size": batch_size,
        "source": judge.source,
    }
    write_parquet(df[CLASSIFIER_COLUMNS], out, metadata=meta)
    log.info(
        "%s: ASR %.3f, %d of %d invalid (judge failures, not counted as safe)",
        classifier,
        (df.verdict == "unsafe").mean(),
        invalid_count(verdicts),
        len(df),
    )
