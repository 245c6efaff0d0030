"""PACT's objective: the calibrated, weighted KL restricted to the safety tokens, and L = L_CE + lambda L_KL.

PACT's published equations were lost, so every form here is rebuilt from the official code
(``compute_safety_tokens_pact.py``, ``finetuning_pact.py``) and checked against the prose (docs/methods.md §2, §A1).

Equation map (docs/methods.md §2):

==========  ====================================================================  ============================
Eq.         meaning                                                               function
==========  ====================================================================  ============================
1           Delta_t(v) = pi_s(v|.) - pi_b(v|.) per response position              :func:`gap_statistics`
2           D(v) = mean over samples of the per-sample mean over positions         :class:`GapAccumulator`
(2.2)       safety set S (top-K) and weights w                                    :func:`select_safety_tokens`,
                                                                                  :func:`safety_weights`
3-4         q = normalise(w * softmax_S(z_ref/tau)); tau^2 KL(q || softmax_S(z/tau))  :func:`weighted_restricted_kl`
5           r = k/|S|, k = min{k : top-k probability mass >= rho}                 :func:`dispersion_ratio`
6           g = sigmoid(alpha (r_theta - r_post - b))                             :func:`gate`
8           g_hat = g for t <= T_c, g exp(-(t - T_c)/tau_d) after                 :func:`position_decay`
7           z_ref = (1 - g_hat) z_full + g_hat z_post  (logits, restricted to S)  :func:`mix_logits`
3-8         the whole KL term, token mean over the batch                          :func:`pact_kl_loss`
9           L = L_CE + lambda L_KL                                                :func:`pact_loss`
==========  ====================================================================  ============================

Ablation switches (the ladder, :mod:`tokensafe.methods.pact.ladder`); Eq. 1-2 and S, w are in
:mod:`tokensafe.methods.pact.token_stats`:

* ``pact_kl_loss(safety_ids=None)`` is the "full-vocab KL" ablation; ``weights=None`` is uniform
  weighting ("+ safety tokens" row); ``KLSettings.calibrate`` / ``.decay`` are the last two ablation rows.

Defaults (all from the code, docs/methods.md §2.1-2.5, §A4, §A16): K = 50 safety tokens, tau_KL = 2 with the tau^2
factor, tau_g = 1, rho = 0.9, alpha = 2, b = 0, T_c = 8, tau_d = 8 (0-indexed answer positions, so
positions 0..8 are at full strength), lambda = 3 (paper; README example 1, code default 0).

Tensor conventions are those of :mod:`tokensafe.train.lm_losses`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokensafe.train.lm_losses import answer_mask, shift_for_next_token

DEFAULT_TAU_KL = 2.0
DEFAULT_TAU_G = 1.0
DEFAULT_RHO = 0.9
DEFAULT_ALPHA = 2.0
DEFAULT_BIAS = 0.0
DEFAULT_T_C = 8
DEFAULT_TAU_D = 8.0
DEFAULT_LAMBDA = 3.0


# ---------------------------------------------------------------------------------------------
# Eq. 5-8: calibration


def dispersion_ratio(z_S: torch.Tensor, tau_g: float = DEFAULT_TAU_G, rho: float = DEFAULT_RHO) -> torch.Tensor:
    """Eq. 5: ``r = k/|S|`` with ``k = (cdf < rho).sum() + 1`` over ``softmax(z_S/tau_g)`` sorted descending.

    ``z_S`` is ``[..., K]``; returns ``[...]`` float32 in (0, 1], without gradient. A low r means a
    confident (peaked) distribution over S.
    """
    if z_S.shape[-1] == 0:
        raise ValueError("dispersion_ratio needs at least one logit in the last dimension")
    if tau_g <= 0 or not 0 < rho <= 1:
        raise ValueError(f"need tau_g > 0 and 0 < rho <= 1, got tau_g={tau_g}, rho={rho}")
    with torch.no_grad():
        p = torch.softmax(z_S.detach().float() / tau_g, dim=-1)
        cdf = torch.sort(p, dim=-1, descending=True).values.cumsum(dim=-1)
        # clamp: with rho = 1 rounding can leave the whole cdf just under rho.
        k = ((cdf < rho).sum(dim=-1) + 1).clamp_max(z_S.shape[-1])
        return k.float() / z_S.shape[-1]


def gate(
    r_theta: torch.Tensor, r_post: torch.Tensor, alpha: float = DEFAULT_ALPHA, bias: float = DEFAULT_BIAS
) -> torch.Tensor:
    """Eq. 6: ``sigmoid(alpha (r_theta - r_post - bias))``.

    The gate opens (towards the no-prompt reference) when the trained model is more dispersed than the
    prompt-free reference. With r in (0, 1], alpha = 2 and b = 0 it stays inside (0.12, 0.88).
    """
    return torch.sigmoid(alpha * (r_theta - r_post - bias))


def position_decay(answer_pos: torch.Tensor, t_c: int = DEFAULT_T_C, tau_d: float = DEFAULT_TAU_D) -> torch.Tensor:
    """Eq. 8 factor: 1 for ``pos <= t_c``, ``exp(-(pos - t_c)/tau_d)`` after (0-indexed answer positions)."""
    if tau_d <= 0:
        raise ValueError(f"tau_d must be > 0, got {tau_d}")
    if (answer_pos < 0).any():
        raise ValueError("answer positions must be >= 0 (0-indexed within the answer)")
    excess = (answer_pos.float() - t_c).clamp_min(0)
    return torch.exp(-excess / tau_d)


def mix_logits(z_full_S: torch.Tensor, z_post_S: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Eq. 7: ``(1 - g) z_full + g z_post``; ``g`` has the shape of the logits minus the last dim (or is a scalar)."""
    if z_full_S.shape != z_post_S.shape:
        raise ValueError(
            f"full and no-prompt logits differ in shape: {tuple(z_full_S.shape)} vs {tuple(z_post_S.shape)}"
        )
    if g.dim() > 0:
        if g.shape != z_full_S.shape[:-1]:
            raise ValueError(
                f"gate shape {tuple(g.shape)} must equal the logits' leading shape {tuple(z_full_S.shape[:-1])}"
            )
        g = g.unsqueeze(-1)
    return (1 - g) * z_full_S + g * z_post_S


# ---------------------------------------------------------------------------------------------
# Eq. 3-4: weighted KL restricted to S


def weighted_restricted_kl(
    z_theta_S: torch.Tensor,
    z_ref_S: torch.Tensor,
    weights: torch.Tensor | None = None,
    tau: float = DEFAULT_TAU_KL,
) -> torch.Tensor:
    """Eq. 3-4 per position: ``tau^2 * KL(q || softmax(z_theta/tau))`` with ``q = normalise(w * softmax(z_ref/tau))``.

    Shapes ``[..., K]`` -> ``[...]``. q is detached (the reference is the target); ``0 log 0 = 0`` so
    zero-weight tokens contribute nothing. Computed in float32 whatever the logits' dtype.
    """
    if z_theta_S.shape != z_ref_S.shape:
        raise ValueError(
            f"model and reference logits differ in shape: {tuple(z_theta_S.shape)} vs {tuple(z_ref_S.shape)}"
        )
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if weights is not None:
        if weights.shape != (z_ref_S.shape[-1],):
            raise ValueError(f"weights must be [{z_ref_S.shape[-1]}], got {tuple(weights.shape)}")
        check_weights(weights)
    return _weighted_kl(z_theta_S, z_ref_S, weights, tau)


def check_weights(weights: torch.Tensor) -> None:
    """w >= 0 and not all zero (a value check: it reads the tensor, so it runs once, not every step)."""
    if (weights < 0).any() or not weights.sum() > 0:
        raise ValueError("weights must be >= 0 and not all zero")


def _weighted_kl(
    z_theta_S: torch.Tensor, z_ref_S: torch.Tensor, weights: torch.Tensor | None, tau: float
) -> torch.Tensor:
    """:func:`weighted_restricted_kl` without its checks (the caller has made them)."""
    q = torch.softmax(z_ref_S.detach().float() / tau, dim=-1)
    if weights is not None:
        q = q * weights.detach().to(device=q.device, dtype=q.dtype)
        q = q / q.sum(dim=-1, keepdim=True)
    log_p = F.log_softmax(z_theta_S.float() / tau, dim=-1)
    # where(), not q * log_p: a -inf model logit on a zero-weight token must give 0, not NaN.
    cross = torch.where(q > 0, q * log_p, torch.zeros_like(log_p))
    return tau**2 * (torch.xlogy(q, q) - cross).sum(dim=-1)


# ---------------------------------------------------------------------------------------------
# Eq. 3-8 assembled


@dataclass(frozen=True)
class KLSettings:
    """The switches and constants of PACT's KL term (one ladder rung's), checked once when it is built.

    calibrate: False -> z_ref = z_full; True -> the Eq. 5-7 gate between the two reference views.
    decay: Eq. 8 on the gate (needs ``calibrate``).
    theta_restricted: the model's logits arrive already restricted to S (``[B, T, K]``, computed from the
      last hidden state, which keeps the backward pass off a dense ``[B, T, V]`` gradient).
    """

    calibrate: bool
    decay: bool
    theta_restricted: bool = False
    tau_kl: float = DEFAULT_TAU_KL
    tau_g: float = DEFAULT_TAU_G
    rho: float = DEFAULT_RHO
    alpha: float = DEFAULT_ALPHA
    bias: float = DEFAULT_BIAS
    t_c: int = DEFAULT_T_C
    tau_d: float = DEFAULT_TAU_D

    def __post_init__(self):
        if self.decay and not self.calibrate:
            raise ValueError("decay=True scales the calibration gate, so it needs calibrate=True")
        for name in ("tau_kl", "tau_g", "tau_d"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.rho <= 1:
            raise ValueError(f"rho must lie in (0, 1], got {self.rho}")
        if self.t_c < 0:
            raise ValueError(f"t_c must be >= 0, got {self.t_c}")


def check_safety_set(safety_ids: torch.Tensor, weights: torch.Tensor | None, vocab_size: int) -> None:
    """S is a non-empty ``[K]`` vector of ids in ``[0, V)`` and w (if any) a valid ``[K]`` weight vector.

    Value checks read the tensors back to the host, so they run once, when the loss is built, and not
    in :func:`pact_kl_loss`, which checks only shapes on every step.
    """
    if safety_ids.dim() != 1 or safety_ids.numel() == 0:
        raise ValueError(f"safety_ids must be a non-empty [K] vector, got shape {tuple(safety_ids.shape)}")
    if safety_ids.min() < 0 or safety_ids.max() >= vocab_size:
        raise ValueError(
            f"safety_ids must lie in [0, {vocab_size}), got range [{int(safety_ids.min())}, {int(safety_ids.max())}]"
        )
    if weights is not None:
        if weights.shape != safety_ids.shape:
            raise ValueError(f"weights must be [{safety_ids.numel()}] like safety_ids, got {tuple(weights.shape)}")
        check_weights(weights)


def pact_kl_loss(
    theta_logits: torch.Tensor,
    labels: torch.Tensor,
    ref_full_S: torch.Tensor,
    settings: KLSettings,
    *,
    safety_ids: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    ref_post_S: torch.Tensor | None = None,
    answer_pos: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PACT's KL term L_KL (Eq. 3-8, without lambda), a token mean over every answer position of the batch.

    Arguments:
      theta_logits ``[B, T, V]``: the trained model's logits; the only tensor that receives gradient
        (``[B, T, K]`` with ``settings.theta_restricted``).
      labels ``[B, T]``: unshifted, ``IGNORE_INDEX`` where no loss; position t counts when ``labels[:, t+1]``
        is an answer token.
      ref_full_S ``[B, T, K]``: frozen reference on the full sequence, ALREADY restricted to S and aligned like
        ``theta_logits`` (index t predicts token t+1). Values at non-answer positions are ignored.
      settings: :class:`KLSettings`, checked when it was built.
      safety_ids ``[K]`` or None (full vocabulary: the "full-vocab KL" ablation, K = V); its values are
        checked once by :func:`check_safety_set`, not here.
      weights ``[K]`` or None (uniform).
      ref_post_S ``[B, T, K]`` or None: the no-prompt reference view placed at the same positions
        (:func:`tokensafe.methods.pact.calibrated_reference.align_post_view`); needed when calibrating.
      answer_pos ``[B, T]`` or None: 0-indexed answer position of the token predicted at t; needed with decay.

    Returns ``(loss, stats)``; stats holds ``gate_mean`` (the applied gate, after decay; 0 without
    calibration), ``r_theta_mean``, ``r_post_mean`` (NaN without calibration) and ``n_tokens``. With no
    answer position at all the loss is a zero that is still attached to ``theta_logits``.
    """
    cfg = settings
    if theta_logits.dim() != 3:
        raise ValueError(f"theta_logits must be [B, T, V], got {tuple(theta_logits.shape)}")
    B, T, V = theta_logits.shape
    if labels.shape != (B, T):
        raise ValueError(f"labels must be [{B}, {T}] like theta_logits, got {tuple(labels.shape)}")
    if cfg.theta_restricted and (safety_ids is None or V != safety_ids.numel()):
        raise ValueError(
            f"theta_restricted needs safety_ids and theta_logits of [B, T, K], got last dim {V} for "
            f"{'no safety_ids' if safety_ids is None else f'K = {safety_ids.numel()}'}"
        )
    K = V if safety_ids is None else safety_ids.numel()

    def check_ref(name: str, ref: torch.Tensor | None) -> torch.Tensor:
        if ref is None:
            raise ValueError(f"{name} is required with calibrate=True")
        if ref.shape != (B, T, K):
            raise ValueError(
                f"{name} must be [B, T, K] = [{B}, {T}, {K}] (aligned like theta_logits), got {tuple(ref.shape)}"
            )
        return ref.detach()  # the reference is a target: never let gradient reach it

    z_full = check_ref("ref_full_S", ref_full_S)
    if cfg.decay and answer_pos is None:
        raise ValueError("answer_pos is required with decay=True")
    if cfg.decay and answer_pos.shape != (B, T):
        raise ValueError(f"answer_pos must be [{B}, {T}], got {tuple(answer_pos.shape)}")
    if weights is not None and weights.shape != (K,):
        raise ValueError(f"weights must be [{K}], got {tuple(weights.shape)}")
    z_post = check_ref("ref_post_S", ref_post_S) if cfg.calibrate else None

    # Shift semantics: position t (0..T-2) predicts labels[:, t+1]; the last position predicts nothing.
    _, shifted_labels = shift_for_next_token(theta_logits, labels)
    mask = torch.zeros(B, T, dtype=torch.bool, device=labels.device)
    mask[:, :-1] = answer_mask(shifted_labels)
    n_tokens = int(mask.sum())  # the one host read per step: the token mean's divisor, logged by the loop
    if n_tokens == 0:
        zero = theta_logits.sum() * 0.0
        return zero, {"gate_mean": 0.0, "r_theta_mean": math.nan, "r_post_mean": math.nan, "n_tokens": 0}

    restrict = safety_ids is not None and not cfg.theta_restricted
    z_theta = theta_logits.index_select(-1, safety_ids.to(theta_logits.device)) if restrict else theta_logits
    z_theta_A = z_theta[mask]  # [N, K]
    z_ref_A = z_full[mask].float()
    stats: dict[str, float] = {
        "gate_mean": 0.0,
        "r_theta_mean": math.nan,
        "r_post_mean": math.nan,
        "n_tokens": n_tokens,
    }

    if cfg.calibrate:
        z_post_A = z_post[mask].float()
        r_theta = dispersion_ratio(z_theta_A, cfg.tau_g, cfg.rho)  # detached inside: the gate is not trained through
        r_post = dispersion_ratio(z_post_A, cfg.tau_g, cfg.rho)
        g = gate(r_theta, r_post, cfg.alpha, cfg.bias)
        if cfg.decay:
            g = g * position_decay(answer_pos[mask].to(g.device), cfg.t_c, cfg.tau_d)
        z_ref_A = mix_logits(z_ref_A, z_post_A, g)
        stats.update(gate_mean=float(g.mean()), r_theta_mean=float(r_theta.mean()), r_post_mean=float(r_post.mean()))

    per_token = _weighted_kl(z_theta_A, z_ref_A, weights, cfg.tau_kl)
    return per_token.sum() / n_tokens, stats


def pact_loss(ce_loss: torch.Tensor, kl_loss: torch.Tensor, lam: float = DEFAULT_LAMBDA) -> torch.Tensor:
    """Eq. 9: ``L = L_CE + lambda * L_KL``; lambda = 3 in the paper (README example 1, code default 0)."""
    return ce_loss + lam * kl_loss


__all__ = [
    "KLSettings",
    "check_safety_set",
    "check_weights",
    "dispersion_ratio",
    "gate",
    "mix_logits",
    "pact_kl_loss",
    "pact_loss",
    "position_decay",
    "weighted_restricted_kl",
]
