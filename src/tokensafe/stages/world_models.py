"""Stage: train the embedded world's base, aligned and guard models (data and tokenizer: ``world_data``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from tokensafe.chat import IGNORE_INDEX
from tokensafe.eval.safety_judges.llama_guard import build_guard_prompt
from tokensafe.io import atomic_path, read_parquet, write_json
from tokensafe.train.batching import make_example
from tokensafe.train.checkpoint import checkpointed
from tokensafe.train.encoding import encode_dataset
from tokensafe.train.lm_losses import labelled_lm_loss
from tokensafe.train.recipe import recipe
from tokensafe.world import models as M

log = logging.getLogger("tokensafe")


def guard_conversation(tokenizer, user: str, agent: str) -> str:
    """The embedded guard reads the published Llama Guard 3 prompt as plain text (its tokenizer has no
    guard chat template), exactly as ``judge`` builds it for any tokenizer without one."""
    return build_guard_prompt(user, agent, wrap=False)


def _save_model(model, tokenizer, out_dir: str, info: dict) -> None:
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(info, Path(tmp) / "tokensafe_model.json")


def build_base(
    *, data_dir: str, tokenizer_dir: str, out_dir: str, arch: dict, train_cfg: dict, seed: int, max_length: int
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    docs = read_parquet(Path(data_dir) / "pretrain.parquet", ["text"])
    model = M.new_causal_lm(tok, seed=seed, **arch)
    log.info("base model: %d parameters, %d documents", M.param_count(model), len(docs))
    info = {"role": "base", "arch": arch, "train": train_cfg, "seed": seed}
    with checkpointed(out_dir, settings=info, inputs=[data_dir, tokenizer_dir]) as ck:
        history = M.fit(
            model,
            M.document_examples(tok, list(docs.text), max_length),
            recipe(train_cfg, seed),
            tok,
            log.info,
            checkpoints=ck,
        )
        _save_model(model, tok, out_dir, {**info, "history": history})


def build_aligned(
    *, data_dir: str, base_dir: str, out_dir: str, train_cfg: dict, seed: int, template: str, max_length: int
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    df = read_parquet(Path(data_dir) / "alignment.parquet", ["prompt", "response"])
    log.info("alignment SFT on %d samples (%s)", len(df), df.kind.value_counts().to_dict())
    info = {"role": "aligned", "train": train_cfg, "seed": seed, "template": template}
    with checkpointed(out_dir, settings=info, inputs=[data_dir, base_dir]) as ck:
        examples = encode_dataset(tok, df, template, max_length)
        history = M.fit(model, examples, recipe(train_cfg, seed), tok, log.info, checkpoints=ck)
        _save_model(model, tok, out_dir, {**info, "history": history})


def guard_examples(tok, df: pd.DataFrame, max_length: int) -> list[dict]:
    """Guard prompt -> verdict ('safe' or 'unsafe\\nS<k>'), loss on the verdict only."""
    out = []
    for user, agent, kind, cat in zip(df.prompt, df.response, df.kind, df.category):
        prompt_ids = tok(guard_conversation(tok, user, agent), add_special_tokens=False)["input_ids"]
        verdict = "safe" if kind == "safe" else f"unsafe\n{cat}"
        target = tok("\n\n" + verdict, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = [tok.bos_token_id] + prompt_ids[-(max_length - len(target) - 1) :] + target
        labels = [IGNORE_INDEX] * (len(ids) - len(target)) + target
        out.append(make_example(ids, labels))
    return out


def build_guard(*, data_dir: str, tokenizer_dir: str, out_dir: str, arch: dict, train_cfg: dict, seed: int) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.chat_template = None  # the guard reads the plain Llama Guard 3 prompt, not the chat format
    df = read_parquet(Path(data_dir) / "guard_train.parquet", ["prompt", "response", "kind", "category"])
    model = M.new_causal_lm(tok, seed=seed, **arch)
    ex = guard_examples(tok, df, arch["max_positions"])
    log.info("guard: %d conversations, longest %d tokens", len(ex), max(len(e["input_ids"]) for e in ex))
    # The loss is on the verdict only, so the LM head runs only there (labelled_lm_loss).
    info = {"role": "guard", "arch": arch, "train": train_cfg, "seed": seed}
    with checkpointed(out_dir, settings=info, inputs=[data_dir, tokenizer_dir]) as ck:
        history = M.fit(model, ex, recipe(train_cfg, seed), tok, log.info, loss_fn=labelled_lm_loss, checkpoints=ck)
        _save_model(model, tok, out_dir, {**info, "history": history})
