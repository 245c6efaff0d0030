"""Token-wise constrained SFT (Qi et al., 2024, "Safety Alignment Should Be Made More Than Just a Few Tokens Deep").

Spec section 4, "Constrained SFT". The objective over the answer tokens ``y_t`` of a sample is

    min_theta  - sum_t (2 / beta_t) * log sigmoid(beta_t * Delta_t),
    Delta_t = log pi_theta(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t),

with ``pi_ref`` the frozen aligned model. Its gradient w.r.t. ``log pi_theta(y_t)`` is
``-2 * (1 - sigmoid(beta_t * Delta_t))``, so the official code (``Unispac/shallow-vs-deep-alignment``,
``ConstrainedSFTTrainer.soft_sft_loss``) trains the numerically stable surrogate ``-w_t * log pi_theta(y_t)``
with the detached weight ``w_t = clamp(2 * (1 - sigmoid(beta_t * Delta_t)), min=1e-3)``, averaged over every
answer token of the batch (one token mean, not a per-sample mean). This module does the same.

Tensor conventions follow :mod:`tokensafe.train.lm_losses`: per-position tensors (``ref_logp``, ``answer_pos``)
are indexed like ``logits``, i.e. entry ``t`` is about the token ``labels[:, t + 1]`` that ``logits[:, t]``
predicts.

Typical use in a training loop::

    # once, before training (frozen aligned model, eval mode, no_grad), stored per sample:
    ref_logp = token_logprobs(ref_model(input_ids).logits, labels)          # [B, T-1]
    # every step:
    loss, stats = constrained_sft_loss(model(input_ids).logits, labels, ref_logp)
    loss.backward()
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tokensafe.chat import IGNORE_INDEX
from tokensafe.io import read_parquet
from tokensafe.methods.registry import FinetuneContext, FinetunePlan
from tokensafe.train.lm_losses import answer_mask, shift_for_next_token

# Official-code constants (docs/methods.md §4: ``beta=0.1, bias_factor=20, first_token_bias_factor=5, bias_length=5``).
DEFAULT_BETA = 0.1
DEFAULT_BIAS_FACTOR = 20.0
DEFAULT_FIRST_TOKEN_BIAS_FACTOR = 5.0
DEFAULT_BIAS_LENGTH = 5
WEIGHT_FLOOR = 1e-3  # the official clamp: a token never drops out of the loss entirely


def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.dim() != 3:
        raise ValueError(f"logits must be [B, T, V]; got shape {tuple(logits.shape)}")
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must be [B, T] matching logits {tuple(logits.shape[:2])}; got {tuple(labels.shape)}")
    if logits.shape[1] < 2:
        raise ValueError(f"need T >= 2 to predict a next token; got T = {logits.shape[1]}")


def _as_shifted(name: str, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Accept a per-position tensor as ``[B, T-1]`` (shifted) or ``[B, T]`` (last column unused)."""
    b, t = labels.shape
    if x.shape == (b, t - 1):
        return x
    if x.shape == (b, t):
        return x[:, :-1]  # column T-1 would predict a token past the sequence: it is never used
    raise ValueError(
        f"{name} must be [B, T-1] = {(b, t - 1)} or [B, T] = {(b, t)} (indexed like logits); got {tuple(x.shape)}"
    )


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[B, T-1]`` log-probability of each next token (entry t: ``log p(labels[:, t+1] | <= t)``), 0 where ignored.

    Used once with the frozen reference model to precompute ``ref_logp``, and inside the loss for the policy.
    Computed in float32 so bf16 logits do not lose the small differences that Delta is made of.
    """
    _check_logits_labels(logits, labels)
    shifted_logits, shifted_labels = shift_for_next_token(logits, labels)
    mask = answer_mask(shifted_labels)
    # Ignored positions gather a dummy index 0 and are zeroed afterwards.
    index = shifted_labels.masked_fill(~mask, 0).unsqueeze(-1)
    if (index < 0).any() or (index >= logits.shape[-1]).any():
        raise ValueError(
            f"labels must be IGNORE_INDEX ({IGNORE_INDEX}) or token ids in [0, {logits.shape[-1]}); "
            f"found values in [{int(shifted_labels.min())}, {int(shifted_labels.max())}]"
        )
    logp = torch.gather(shifted_logits.float(), -1, index).squeeze(-1) - torch.logsumexp(shifted_logits.float(), dim=-1)
    return logp.masked_fill(~mask, 0.0)


def answer_positions(labels: torch.Tensor) -> torch.LongTensor:
    """``[B, T-1]`` 0-indexed position of each target token within its sample's answer, -1 where ignored.

    The position is the number of loss-bearing tokens before it in the sample, exactly what the official code
    uses (it strips the ignored positions and indexes the remaining tokens 0, 1, 2, ...).
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be [B, T]; got shape {tuple(labels.shape)}")
    mask = answer_mask(labels[:, 1:])
    pos = torch.cumsum(mask.long(), dim=1) - 1
    return pos.masked_fill(~mask, -1)


def beta_schedule(
    answer_pos: torch.LongTensor,
    beta: float = DEFAULT_BETA,
    bias_factor: float = DEFAULT_BIAS_FACTOR,
    first_token_bias_factor: float = DEFAULT_FIRST_TOKEN_BIAS_FACTOR,
    bias_length: int = DEFAULT_BIAS_LENGTH,
) -> torch.Tensor:
    """Per-token beta from 0-indexed answer positions (official ``get_beta_list``).

    Position 0 -> ``beta * first_token_bias_factor`` (0.5); positions 1 .. bias_length-1 -> ``beta * bias_factor``
    (2.0); later positions -> ``beta`` (0.1). With the defaults this is the spec's 1-indexed
    "beta_1 = 0.5, beta_2..5 = 2.0, beta_t = 0.1 for t > 5": 1-indexed t is 0-indexed position t-1, and the
    5-token biased prefix is positions 0..4. With ``bias_length = 0`` there is no prefix and every token gets
    ``beta`` (the official code skips the first-token factor too).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0; got {beta}")
    if bias_length < 0:
        raise ValueError(f"bias_length must be >= 0; got {bias_length}")
    if answer_pos.dtype.is_floating_point or answer_pos.dtype == torch.bool:
        raise ValueError(f"answer_pos must be an integer tensor; got dtype {answer_pos.dtype}")
    if answer_pos.numel() and int(answer_pos.min()) < 0:
        raise ValueError(
            f"answer_pos must be >= 0 (select answer tokens first; -1 marks ignored positions); "
            f"found min {int(answer_pos.min())}"
        )
    out = torch.full(answer_pos.shape, float(beta), dtype=torch.float32, device=answer_pos.device)
    out = torch.where(answer_pos < bias_length, torch.full_like(out, beta * bias_factor), out)
    if bias_length > 0:
        out = torch.where(answer_pos == 0, torch.full_like(out, beta * first_token_bias_factor), out)
    return out


def _broadcast_or_raise(**tensors: torch.Tensor) -> None:
    try:
        torch.broadcast_shapes(*(t.shape for t in tensors.values()))
    except RuntimeError as exc:
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
        raise ValueError(f"shapes must broadcast together; got {shapes}") from exc


def constrained_sft_weights(logp_theta: torch.Tensor, logp_ref: torch.Tensor, beta_t: torch.Tensor) -> torch.Tensor:
    """Detached per-token weight ``clamp(2 * (1 - sigmoid(beta_t * (logp_theta - logp_ref))), min=1e-3)``.

    Delta = 0 gives weight 1 (plain SFT); the weight falls towards the floor once the policy already assigns the
    token more probability than the reference (Delta >> 0), which is what stops it drifting far from pi_ref.
    """
    _broadcast_or_raise(logp_theta=logp_theta, logp_ref=logp_ref, beta_t=beta_t)
    with torch.no_grad():
        delta = logp_theta.detach().float() - logp_ref.detach().float()
        w = 2.0 * (1.0 - torch.sigmoid(beta_t.float() * delta))
        return torch.clamp(w, min=WEIGHT_FLOOR)


def constrained_sft_objective_exact(
    logp_theta: torch.Tensor, logp_ref: torch.Tensor, beta_t: torch.Tensor
) -> torch.Tensor:
    """Token mean of ``-(2 / beta_t) * log sigmoid(beta_t * (logp_theta - logp_ref))`` (the paper's objective).

    For tests and diagnostics: its gradient w.r.t. ``logp_theta`` is ``-2 (1 - sigmoid(beta_t Delta)) / N``, the
    surrogate's gradient before clamping. Inputs are flat (or any matching shape) tensors of answer tokens.
    """
    _broadcast_or_raise(logp_theta=logp_theta, logp_ref=logp_ref, beta_t=beta_t)
    if logp_theta.numel() == 0:
        raise ValueError("need at least one answer token; got an empty logp_theta")
    delta = logp_theta.float() - logp_ref.detach().float()
    beta_t = beta_t.float()
    return (-(2.0 / beta_t) * F.logsigmoid(beta_t * delta)).mean()


def constrained_sft_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ref_logp: torch.Tensor,
    answer_pos: torch.LongTensor | None = None,
    *,
    beta: float = DEFAULT_BETA,
    bias_factor: float = DEFAULT_BIAS_FACTOR,
    first_token_bias_factor: float = DEFAULT_FIRST_TOKEN_BIAS_FACTOR,
    bias_length: int = DEFAULT_BIAS_LENGTH,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Stable constrained-SFT loss: token mean over the batch's answer tokens of ``-w_t * log pi_theta(y_t)``.

    Args:
        logits: ``[B, T, V]`` policy logits.
        labels: ``[B, T]`` unshifted labels, ``IGNORE_INDEX`` off the answer.
        ref_logp: reference log-probs indexed like logits, ``[B, T-1]`` (what :func:`token_logprobs` returns)
            or ``[B, T]`` (last column unused). Only answer positions are read.
        answer_pos: 0-indexed answer positions indexed like logits (``[B, T-1]`` or ``[B, T]``); by default
            :func:`answer_positions` of ``labels``, i.e. the count of earlier answer tokens in the sample.

    Returns ``(loss, stats)``; stats are floats for logging: ``num_tokens``, ``mean_weight``, ``mean_delta``,
    ``frac_floor`` (share of tokens whose weight hit the 1e-3 floor). A batch with no answer token returns a
    zero loss that still backpropagates (zero gradient) and NaN means.
    """
    _check_logits_labels(logits, labels)
    ref_logp = _as_shifted("ref_logp", ref_logp, labels)
    if answer_pos is None:
        answer_pos = answer_positions(labels)
    else:
        answer_pos = _as_shifted("answer_pos", answer_pos, labels)

    mask = answer_mask(labels[:, 1:])
    logp_theta = token_logprobs(logits, labels)[mask]
    n = int(mask.sum())
    if n == 0:
        nan = float("nan")
        return logits.sum() * 0.0, {"num_tokens": 0.0, "mean_weight": nan, "mean_delta": nan, "frac_floor": nan}

    beta_t = beta_schedule(
        answer_pos[mask],
        beta=beta,
        bias_factor=bias_factor,
        first_token_bias_factor=first_token_bias_factor,
        bias_length=bias_length,
    )
    logp_ref = ref_logp[mask].to(logp_theta.device)
    w = constrained_sft_weights(logp_theta, logp_ref, beta_t)
    loss = -(w * logp_theta).sum() / n

    stats = {
        "num_tokens": float(n),
        "mean_weight": float(w.mean()),
        "mean_delta": float((logp_theta.detach() - logp_ref.float()).mean()),
        "frac_floor": float((w <= WEIGHT_FLOOR).float().mean()),
    }
    return loss, stats


def build_constrained(ctx: FinetuneContext) -> FinetunePlan:
    cfg = ctx.method_settings
    dump = read_parquet(ctx.inputs["reference_losses"], ["sample_id", "position", "token_id", "loss"])
    by_sample = {int(s): g for s, g in dump.groupby("sample_id")}
    examples = []
    for sid, ex in zip(ctx.data["sample_id"], ctx.examples):
        g = by_sample.get(int(sid))
        if g is None or len(g) != len(ex["input_ids"]) or not np.array_equal(g.token_id.to_numpy(), ex["input_ids"]):
            raise ValueError(f"sample {sid}: the reference log-probs were computed on other token ids")
        nll = g.sort_values("position").loss.to_numpy(dtype=np.float32)
        ref_logp = np.zeros(len(nll), dtype=np.float32)
        ref_logp[:-1] = -nll[1:]  # index t holds log pi_ref(token t+1 | <= t), like logits[:, t]
        examples.append({**ex, "ref_logp": ref_logp})

    def loss_fn(model, batch):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return constrained_sft_loss(out.logits, batch["labels"], batch["ref_logp"], **cfg)

    return FinetunePlan(examples, loss_fn, info=dict(cfg))
