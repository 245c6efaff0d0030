"""Per-token loss dumps: a model's NLL of every token of the fine-tuning set, as a columnar table.

Shared by two method families, so it lives in train: TOSS scores tokens with two of them (rules
``toss_utility_losses``, ``toss_losses``; docs/methods.md §1.3) and constrained SFT reads the aligned model's
(``aligned_losses``), both through :func:`dump_losses` with TOSS's ``chunk_size``. Only the ``is_poison_token``
column is TOSS's alone (its mask report, tokensafe.methods.toss.masking); it is cheap, so every dump carries it.
The NLL is computed without materialising full-batch logits.

``out[b, t] = -log P(input_ids[b, t] | input_ids[b, <t])``, read off ``hidden[b, t - 1]``;
``out[:, 0] = 0`` because the first token has no context. This is the TOSS ``loss[i][j]`` array.

Full fp32 logits for a batch are ``B * T * V * 4`` bytes (8 x 2048 x 128256 x 4 = 8.4 GB for a
Llama-3 vocabulary), so :func:`chunked_token_nll` runs the LM head and the cross-entropy over
``chunk_size`` positions at a time: peak extra memory grows with ``chunk_size * V``, not ``B * T * V``.
The saving only holds without autograd (the scoring pass runs under ``no_grad``); with grad enabled
every chunk's logits are kept for backward.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F

from tokensafe.chat import IGNORE_INDEX, char_span_to_token_mask
from tokensafe.io import read_parquet, write_parquet
from tokensafe.train.batching import collate
from tokensafe.train.encoding import encode_dataset
from tokensafe.train.lora import load_model, load_tokenizer

log = logging.getLogger("tokensafe")

LossHead = torch.nn.Module | Callable[[torch.Tensor], torch.Tensor]


def chunked_token_nll(
    hidden: torch.Tensor,
    lm_head: LossHead,
    input_ids: torch.Tensor,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Per-token NLL ``[B, T]`` (float32) from last hidden states ``[B, T, H]``, ``chunk_size`` positions at a time.

    ``lm_head`` maps ``[n, H] -> [n, V]`` (an ``nn.Linear`` or any callable, e.g. one that adds logit
    soft-capping). Logits are upcast to float32 per chunk before the log-softmax, as HF does.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, T, H], got shape {tuple(hidden.shape)}")
    if input_ids.shape != hidden.shape[:2]:
        raise ValueError(f"input_ids must be [B, T] = {tuple(hidden.shape[:2])}, got {tuple(input_ids.shape)}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")

    batch, seq_len, width = hidden.shape
    out = torch.zeros(batch, seq_len, dtype=torch.float32, device=hidden.device)
    if seq_len < 2:
        return out
    # Position t-1 predicts token t. reshape copies [B*(T-1), H], which is small next to [B*(T-1), V].
    flat_hidden = hidden[:, :-1, :].reshape(-1, width)
    flat_targets = input_ids[:, 1:].reshape(-1).to(device=hidden.device, dtype=torch.long)
    flat_out = torch.empty(flat_targets.numel(), dtype=torch.float32, device=hidden.device)
    for start in range(0, flat_targets.numel(), chunk_size):
        stop = start + chunk_size
        logits = lm_head(flat_hidden[start:stop]).float()
        flat_out[start:stop] = F.cross_entropy(logits, flat_targets[start:stop], reduction="none")
        del logits  # free this chunk before the next one is allocated
    out[:, 1:] = flat_out.view(batch, seq_len - 1)
    return out


def _zero_unscored(nll: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Zero positions whose target or whose context token is padding.

    A token is scored only if it and its predecessor are real tokens, so the first real token of a
    left-padded row gets 0 like position 0 of an unpadded one, and padding targets never carry loss.
    """
    if attention_mask is None:
        return nll
    real = attention_mask.to(device=nll.device).bool()
    scored = torch.zeros_like(real)
    scored[:, 1:] = real[:, 1:] & real[:, :-1]
    return nll * scored


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The HF ``*ForCausalLM`` under a peft wrapper (peft's ``get_base_model``), else the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, LossHead]:
    """Split a causal LM into (decoder body -> last hidden state, hidden -> logits head)."""
    lm = _unwrap(model)
    decoder = None
    get_decoder = getattr(lm, "get_decoder", None)
    if callable(get_decoder):
        decoder = get_decoder()
    if decoder is None or decoder is lm:
        # Fallback for models without get_decoder: HF stores the body under base_model_prefix.
        decoder = getattr(lm, getattr(lm, "base_model_prefix", "model"), None)
    if decoder is None or decoder is lm:
        raise ValueError(f"cannot find the decoder body of {type(lm).__name__}: no get_decoder()/base_model")
    head = lm.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(lm).__name__}.get_output_embeddings() returned None: no LM head to score with")
    # Gemma-2-style final soft-capping is part of the logits; keep it so both paths agree.
    softcap = getattr(getattr(lm, "config", None), "final_logit_softcapping", None)
    if softcap:

        def capped(h: torch.Tensor, head=head, cap=float(softcap)) -> torch.Tensor:
            return torch.tanh(head(h).float() / cap) * cap

        return decoder, capped
    return decoder, head


class _EvalMode:
    """Run a model in eval mode (dropout off, as the scoring spec requires) and restore its previous mode."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


@torch.no_grad()
def per_token_nll(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Per-token NLL ``[B, T]`` float32 of an HF causal LM (optionally peft-wrapped), never building full logits.

    Runs only the decoder body for the last hidden state, then :func:`chunked_token_nll`. Positions
    whose target or predecessor is padding (``attention_mask == 0``) are 0. Eval mode, no grad.
    """
    decoder, head = _decoder_and_head(model)
    with _EvalMode(model):
        out = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        nll = chunked_token_nll(hidden, head, input_ids, chunk_size=chunk_size)
    return _zero_unscored(nll, attention_mask)


@torch.no_grad()
def naive_token_nll(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference for :func:`per_token_nll`: full ``[B, T, V]`` float32 logits, then one cross-entropy."""
    with _EvalMode(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.float()
        nll = torch.zeros(input_ids.shape, dtype=torch.float32, device=logits.device)
        nll[:, 1:] = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]),
            input_ids[:, 1:].reshape(-1).to(logits.device),
            reduction="none",
        ).view(input_ids.shape[0], -1)
    return _zero_unscored(nll, attention_mask)


def _as_numpy(x: torch.Tensor | np.ndarray | Sequence, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular array, got ragged input") from err


def loss_table(
    sample_ids: torch.Tensor | np.ndarray | Sequence[int],
    input_ids: torch.Tensor | np.ndarray,
    response_mask: torch.Tensor | np.ndarray,
    losses: torch.Tensor | np.ndarray,
    dtype: str = "float32",
    attention_mask: torch.Tensor | np.ndarray | None = None,
) -> pa.Table:
    """Flatten one scored batch into a long table, one row per non-padding token.

    Columns: ``sample_id`` int64, ``position`` int32, ``token_id`` int32, ``loss`` float32|float16,
    ``is_response`` bool. Padding is given by ``attention_mask`` ``[B, T]`` (1/True = real token;
    ``None`` = no padding), so either padding side works. ``position`` is the token's index within the
    sample's own *unpadded* token list, so it matches the SFT tokenisation whatever the padding side (§A12).
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    ids = _as_numpy(input_ids, "input_ids")
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [B, T], got shape {ids.shape}")
    resp = _as_numpy(response_mask, "response_mask").astype(bool)
    loss = _as_numpy(losses, "losses")
    sids = _as_numpy(sample_ids, "sample_ids").astype(np.int64).reshape(-1)
    real = (
        np.ones(ids.shape, dtype=bool)
        if attention_mask is None
        else _as_numpy(attention_mask, "attention_mask").astype(bool)
    )
    for name, arr in (("response_mask", resp), ("losses", loss), ("attention_mask", real)):
        if arr.shape != ids.shape:
            raise ValueError(f"{name} must have the shape of input_ids {ids.shape}, got {arr.shape}")
    if sids.shape[0] != ids.shape[0]:
        raise ValueError(f"sample_ids must have one id per row ({ids.shape[0]}), got {sids.shape[0]}")
    if np.any(resp & ~real):
        raise ValueError("response_mask marks padding positions (attention_mask == 0) as response tokens")

    rows, cols = np.nonzero(real)  # row-major: samples in batch order, positions ascending
    position = np.cumsum(real, axis=1)[rows, cols] - 1
    return pa.table(
        {
            "sample_id": pa.array(sids[rows], type=pa.int64()),
            "position": pa.array(position.astype(np.int32), type=pa.int32()),
            "token_id": pa.array(ids[rows, cols].astype(np.int32), type=pa.int32()),
            "loss": pa.array(loss[rows, cols].astype(np.dtype(dtype)), type=pa.from_numpy_dtype(np.dtype(dtype))),
            "is_response": pa.array(resp[rows, cols], type=pa.bool_()),
        }
    )


def poison_token_flags(tok, df: pd.DataFrame, examples: list[dict]) -> list[np.ndarray]:
    """Per example, which tokens lie in the sample's recorded harmful span (all False without spans)."""
    flags = []
    has_spans = {"harm_start", "harm_end"} <= set(df.columns)
    for i, ex in enumerate(examples):
        f = np.zeros(len(ex["input_ids"]), dtype=bool)
        if has_spans:
            row = df.iloc[i]
            if row.harm_end > row.harm_start:
                resp = ex["labels"] != IGNORE_INDEX
                n = int(resp.sum())
                f[resp] = char_span_to_token_mask(tok, row.response, [(int(row.harm_start), int(row.harm_end))], n)
        flags.append(f)
    return flags


@torch.no_grad()
def dump_losses(
    *, aligned: str, adapter: str | None, data_path: str, settings: dict, out: str, batch_size: int = 32
) -> None:
    """Per-token NLL of every token of the fine-tuning set under (aligned + adapter), as Parquet columns."""
    df = read_parquet(data_path, ["sample_id", "prompt", "response"])
    tok = load_tokenizer(aligned)
    model = load_model(aligned, settings.get("dtype", "auto"), adapter=adapter)
    examples = encode_dataset(tok, df, settings["prompt_template"], settings["max_length"])
    flags = poison_token_flags(tok, df, examples)
    chunk = settings["method_settings"].get("chunk_size", 1024)
    device = next(model.parameters()).device
    order = np.argsort([-len(e["input_ids"]) for e in examples], kind="stable")
    tables = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collate([examples[i] for i in idx], pad_id=tok.pad_token_id)
        nll = per_token_nll(model, batch["input_ids"].to(device), batch["attention_mask"].to(device), chunk)
        t = loss_table(
            df.sample_id.to_numpy()[idx],
            batch["input_ids"],
            batch["labels"] != IGNORE_INDEX,
            nll.cpu(),
            attention_mask=batch["attention_mask"],
        )
        poison = np.concatenate([flags[i] for i in idx])  # loss_table emits rows sample by sample, unpadded
        tables.append(t.append_column("is_poison_token", pa.array(poison)))
        if start // batch_size % 10 == 0:
            log.info("scored %d/%d samples", min(start + batch_size, len(order)), len(order))
    table = pa.concat_tables(tables).sort_by([("sample_id", "ascending"), ("position", "ascending")])
    write_parquet(table, out, metadata={"adapter": adapter, "settings": settings})
    log.info("loss dump: %d tokens (%d response) -> %s", table.num_rows, int(pc_sum(table["is_response"])), out)


def pc_sum(col) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(col).as_py() or 0)
