"""Stage: judge the harmful-prompt responses with the refusal-keyword judge and a Llama-Guard model."""

from __future__ import annotations

import logging

import pandas as pd
import torch

from tokensafe.eval.safety_judges.keyword_judge import is_refusal
from tokensafe.io import parquet_metadata, read_parquet, write_parquet
from tokensafe.modelref import load_name
from tokensafe.runtime.job import progress

log = logging.getLogger("tokensafe")


def run_judge(
    *,
    generations: str,
    guard: str,
    judge_cfg: dict,
    guard_ref: str,
    out: str,
    dtype: str = "auto",
    threads: int = 1,
    backend: str = "transformers",
    vllm_cfg: dict | None = None,
) -> None:
    from tokensafe.eval.safety_judges.guard_judge import judge_pairs, judge_pairs_vllm
    from tokensafe.train.lora import load_model, load_tokenizer

    torch.set_num_threads(threads)
    gen = read_parquet(generations, ["set", "prompt_id", "prompt", "response"])
    harmful = gen[gen["set"] == "harmful"].reset_index(drop=True)
    if harmful.empty:
        raise ValueError(f"{generations}: no responses to harmful prompts to judge")
    keywords = judge_cfg["keywords"]
    refused = [is_refusal(r, keywords) for r in harmful.response]
    tok = load_tokenizer(guard)
    g = judge_cfg.get("guard", {})
    if backend == "vllm":
        results, template = judge_pairs_vllm(
            load_name(guard), tok, list(harmful.prompt), list(harmful.response), vllm_cfg, g.get("max_new_tokens", 10)
        )
    else:
        model = load_model(guard, dtype)
        results, template = judge_pairs(
            model,
            tok,
            list(harmful.prompt),
            list(harmful.response),
            g.get("max_new_tokens", 10),
            g.get("batch_size", 32),
            progress(log, "guard"),
        )
    df = pd.DataFrame(
        {
            "prompt_id": harmful.prompt_id.astype("int64"),
            "keyword_refusal": refused,
            "keyword_attack_success": [not r for r in refused],
            "guard_verdict": [r.verdict for r in results],
            "guard_categories": [",".join(r.categories) for r in results],
            "guard_p_unsafe": [r.p_unsafe for r in results],
            "guard_raw": [r.raw for r in results],
        }
    )
    meta = parquet_metadata(generations)
    meta["judge"] = {"keywords": keywords, "guard": guard_ref, "guard_template": template, "backend": backend, **g}
    write_parquet(df, out, metadata=meta)
    log.info(
        "keyword ASR %.3f, guard ASR %.3f (%d invalid)",
        df.keyword_attack_success.mean(),
        (df.guard_verdict == "unsafe").mean(),
        int((df.guard_verdict == "invalid").sum()),
    )
