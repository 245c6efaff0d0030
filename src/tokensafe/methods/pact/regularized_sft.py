"""PACT and its ablation ladder (``tokensafe.methods.pact.ladder``): CE + lambda * weighted KL on the safety tokens."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from tokensafe.chat import IGNORE_INDEX
from tokensafe.io import read_parquet
from tokensafe.methods.pact.calibrated_reference import align_post_view, answer_positions
from tokensafe.methods.pact.kl import KLSettings, check_safety_set, pact_kl_loss, pact_loss
from tokensafe.methods.pact.ladder import LADDER
from tokensafe.methods.registry import FinetuneContext, FinetunePlan
from tokensafe.rerun import stage_keys

log = logging.getLogger("tokensafe")


def attach_reference(ctx: FinetuneContext, ref: dict[str, torch.Tensor]) -> list[dict]:
    """Per example: ref_full / ref_post ``[T, K]`` at the shifted positions, and answer positions ``[T]``.

    ``ref`` is the `pact_reference` rule's safetensors file, loaded (sample_id, position, token_id, full, post,
    safety_ids); its positions and token ids must be those of this tokenisation.
    """
    sid = ref["sample_id"].numpy()
    bounds = np.flatnonzero(np.diff(sid)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(sid)]])
    spans = {int(sid[s]): (s, e) for s, e in zip(starts, ends)}
    out = []
    for sample_id, ex in zip(ctx.data["sample_id"], ctx.examples):
        answer = np.flatnonzero(ex["labels"] != IGNORE_INDEX)
        s, e = spans.get(int(sample_id), (0, 0))
        pos = ref["position"][s:e].numpy()
        same_ids = np.array_equal(ref["token_id"][s:e].numpy(), np.asarray(ex["input_ids"])[answer])
        if len(answer) == 0 or e - s != len(answer) or pos[0] != answer[0] - 1 or not same_ids:
            raise ValueError(
                f"sample {sample_id}: cached reference signals do not match the training tokenisation "
                "(recompute them with the same tokenizer, template and max_length)"
            )
        labels = torch.from_numpy(ex["labels"])
        full = align_post_view(ref["full"][s:e], labels).numpy()
        post = align_post_view(ref["post"][s:e], labels).numpy()
        apos = answer_positions(labels).clamp(min=0).numpy()  # read only where an answer token is predicted
        out.append({**ex, "ref_full": full, "ref_post": post, "answer_pos": apos})
    return out


class RestrictedLogits:
    """The trained model's logits on S straight from its last hidden state and the output-embedding rows
    of S: the values of ``logits[..., S]``, but backward then carries a ``[B, T, K]`` gradient instead of
    a dense ``[B, T, V]`` one (zero-filled, then added to the cross-entropy's). On CPU that dense gradient
    made a PACT step 1.18 x an SFT step (bench/bench_pact_step.py). Checked against the model's logits on
    the first batch: a head that is not a plain linear map of the last hidden state (logit soft-capping or
    scaling) is detected and the logits are sliced instead.
    """

    def __init__(self, safety_ids: torch.Tensor):
        self.ids = safety_ids
        self.direct: bool | None = None  # decided on the first batch

    def __call__(self, model, out) -> torch.Tensor:
        ids = self.ids.to(out.logits.device)
        if self.direct is not False:
            head = model.get_output_embeddings()
            bias = None if getattr(head, "bias", None) is None else head.bias.index_select(0, ids)
            z = F.linear(out.hidden_states[-1], head.weight.index_select(0, ids), bias)
            if self.direct is None:
                self.direct = same_logits(z.detach(), out.logits.detach().index_select(-1, ids))
                if not self.direct:
                    log.warning(
                        "PACT: the model's logits are not its output embedding applied to the last hidden "
                        "state; slicing the full logits instead (slower backward)"
                    )
            if self.direct:
                return z
        return out.logits.index_select(-1, ids)


def same_logits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to the rounding of their dtype (another GEMM shape sums in another order)."""
    rtol = 1e-3 if a.dtype == torch.float32 else 2e-2
    scale = max(1.0, float(b.float().abs().max()))
    return bool(torch.allclose(a.float(), b.float(), rtol=rtol, atol=rtol * scale))


def make_loss(cfg: dict, rung: dict, safety_ids: torch.Tensor | None, weights: torch.Tensor | None):
    # A rung's settings hold only the constants it uses (tokensafe.rerun.stage_keys.pact_finetune_keys); the
    # gate's and the decay's keep KLSettings' defaults where the rung switches them off and never reads them.
    consts = {k: cfg[k] for k in ("tau_kl",) + stage_keys.PACT_CALIBRATION + stage_keys.PACT_DECAY if k in cfg}
    settings = KLSettings(calibrate=rung["calibrate"], decay=rung["decay"], theta_restricted=rung["tokens"], **consts)
    restricted = RestrictedLogits(safety_ids) if rung["tokens"] else None

    def loss_fn(model, batch):
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            output_hidden_states=rung["tokens"],
        )
        if rung["tokens"]:
            theta = restricted(model, out)
            ids = safety_ids.to(out.logits.device)
            ref_full, ref_post = batch["ref_full"], batch["ref_post"] if rung["calibrate"] else None
            w = weights.to(out.logits.device) if rung["weights"] else None
        else:
            # Full-vocabulary KL: the reference is the model with its adapters disabled (exact, one
            # extra forward pass; caching all-vocabulary logits would not fit for real vocabularies).
            theta = out.logits
            with torch.no_grad(), model.disable_adapter():
                ref_full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            ids, ref_post, w = None, None, None
        kl, stats = pact_kl_loss(
            theta,
            batch["labels"],
            ref_full,
            settings,
            safety_ids=ids,
            weights=w,
            ref_post_S=ref_post,
            answer_pos=batch.get("answer_pos"),
        )
        return pact_loss(out.loss, kl, cfg["lambda"]), {
            "ce": float(out.loss.detach()),
            "kl": float(kl.detach()),
            **{k: v for k, v in stats.items() if k == "gate_mean"},
        }

    return loss_fn


def build_pact(ctx: FinetuneContext) -> FinetunePlan:
    cfg = ctx.method_settings
    rung = LADDER[ctx.method]
    if not rung["tokens"]:
        return FinetunePlan(ctx.examples, make_loss(cfg, rung, None, None), info={"kl": "full vocabulary"})
    tokens = read_parquet(ctx.inputs["safety_tokens"], ["token_id", "weight"])
    ref_ids = tokens.token_id.to_numpy()
    from safetensors.torch import load_file

    ref = load_file(ctx.inputs["reference"])
    if not np.array_equal(ref["safety_ids"].numpy(), ref_ids):
        raise ValueError("the cached reference signals were computed for other safety tokens")
    examples = attach_reference(ctx, ref)
    ids = torch.tensor(ref_ids, dtype=torch.long)
    w = torch.tensor(tokens.weight.to_numpy(), dtype=torch.float32)  # a copy: parquet arrays are read-only
    check_safety_set(ids, w if rung["weights"] else None, ctx.model.get_output_embeddings().weight.shape[0])
    return FinetunePlan(
        examples, make_loss(cfg, rung, ids, w), info={"k": len(ids), "nonzero_weights": int((w > 0).sum()), **rung}
    )
