"""PACT: safety-token identification and the calibrated, weighted KL restricted to the safety tokens.

PACT's published equations were lost, so every form here is rebuilt from the official code
(``compute_safety_tokens_pact.py``, ``finetuning_pact.py``) and checked against the prose (spec section 2, A1).

Equation map (spec section 2):

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

Paper-vs-code switches (spec A2; the defaults follow the code):

* ``select_safety_tokens(mode=...)``: ``"prob"`` (code, default) ranks tokens by the mean aligned-model
  probability p_bar; ``"discrepancy"`` (paper) ranks them by D.
* ``safety_weights(mode=...)``: ``"relu_centered"`` (code, default) w = max(0, D - mean_S D), which is what
  the code's z-score -> L2-normalise -> relu of D over S reduces to once q is renormalised;
  ``"raw"`` (paper) w = max(0, D). Both are returned normalised to sum 1; the scale never matters because
  q is renormalised in Eq. 3.
* ``pact_kl_loss(safety_ids=None)`` is the "full-vocab KL" ablation; ``weights=None`` is uniform
  weighting ("+ safety tokens" row); ``calibrate`` / ``decay`` are the last two ablation rows.

Defaults (all from the code, spec 2.1-2.5, A4, A16): K = 50 safety tokens, tau_KL = 2 with the tau^2
factor, tau_g = 1, rho = 0.9, alpha = 2, b = 0, T_c = 8, tau_d = 8 (0-indexed answer positions, so
positions 0..8 are at full strength), lambda = 3 (paper; README example 1, code default 0).

Tensor conventions are those of :mod:`tokensafe.losses.common`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tokensafe.losses.common import answer_mask, shift_for_next_token

TOKEN_SELECT_MODES = ("prob", "discrepancy")
WEIGHT_MODES = ("relu_centered", "raw")

DEFAULT_K = 50
DEFAULT_TAU_KL = 2.0
DEFAULT_TAU_G = 1.0
DEFAULT_RHO = 0.9
DEFAULT_ALPHA = 2.0
DEFAULT_BIAS = 0.0
DEFAULT_T_C = 8
DEFAULT_TAU_D = 8.0
DEFAULT_LAMBDA = 3.0


# ---------------------------------------------------------------------------------------------
# Eq. 1-2: safety-token statistics


def gap_statistics(p_aligned: torch.Tensor, p_base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 averaged over the positions of ONE sample.

    ``p_aligned`` ``[R, V_s]`` and ``p_base`` ``[R, V_b]`` are the two models' next-token probabilities
    (temperature 1) at the ``R`` response positions. Returns ``(mean_t Delta_t, mean_t p_aligned)``, both
    ``[min(V_s, V_b)]`` in float64: when the vocabularies differ (padded embedding rows, spec A5) only the
    shared leading ids are comparable.
    """
    if p_aligned.dim() != 2 or p_base.dim() != 2:
        raise ValueError(f"expected [R, V] probabilities, got {tuple(p_aligned.shape)} and {tuple(p_base.shape)}")
    if p_aligned.shape[0] != p_base.shape[0]:
        raise ValueError(f"both models must score the same {p_aligned.shape[0]} positions, base has {p_base.shape[0]}")
    if p_aligned.shape[0] == 0:
        raise ValueError("a sample with no response positions has no gap statistics")
    v = min(p_aligned.shape[1], p_base.shape[1])
    p_s = p_aligned[:, :v].detach().double()
    p_b = p_base[:, :v].detach().double()
    return (p_s - p_b).mean(dim=0), p_s.mean(dim=0)


class GapAccumulator:
    """Eq. 2: the mean over samples of each sample's position-mean (not the mean over pooled positions).

    Sums are kept in float64 so that 512+ samples add up without drift in the ranking of close tokens.
    """

    def __init__(self) -> None:
        self._d_sum: torch.Tensor | None = None
        self._p_sum: torch.Tensor | None = None
        self.n_samples = 0

    def add(self, p_aligned: torch.Tensor, p_base: torch.Tensor) -> None:
        d, p = gap_statistics(p_aligned, p_base)
        if self._d_sum is None:
            self._d_sum, self._p_sum = d.clone(), p.clone()
        else:
            if d.shape != self._d_sum.shape:
                raise ValueError(f"vocabulary size changed between samples: {d.shape[0]} vs {self._d_sum.shape[0]}")
            self._d_sum += d.to(self._d_sum.device)
            self._p_sum += p.to(self._p_sum.device)
        self.n_samples += 1

    def result(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(D [V], p_bar [V], n_samples)``."""
        if self._d_sum is None:
            raise ValueError("GapAccumulator.result() called before any sample was added")
        return self._d_sum / self.n_samples, self._p_sum / self.n_samples, self.n_samples


# ---------------------------------------------------------------------------------------------
# Section 2.2: safety set and weights


def select_safety_tokens(
    D: torch.Tensor, pbar: torch.Tensor, k: int = DEFAULT_K, mode: str = "prob"
) -> torch.Tensor:
    """Top-``k`` token ids by ``pbar`` (``mode="prob"``, code) or by ``D`` (``"discrepancy"``, paper).

    Sorted by the key, descending; ties go to the lower token id so the set is reproducible.
    """
    if mode not in TOKEN_SELECT_MODES:
        raise ValueError(f"unknown token selection mode {mode!r}; allowed: {', '.join(TOKEN_SELECT_MODES)}")
    if D.dim() != 1 or D.shape != pbar.shape:
        raise ValueError(f"expected D and pbar of the same [V] shape, got {tuple(D.shape)} and {tuple(pbar.shape)}")
    key = pbar if mode == "prob" else D
    if not 0 < k <= key.shape[0]:
        raise ValueError(f"k must be in [1, {key.shape[0]}] (vocabulary size), got {k}")
    if torch.isnan(key).any():
        raise ValueError(f"the {mode!r} selection key contains NaN")
    # A stable descending sort keeps equal keys in ascending id order.
    order = torch.sort(key.detach().cpu(), descending=True, stable=True).indices
    return order[:k].to(dtype=torch.long, device=key.device)


def safety_weights(D_S: torch.Tensor, mode: str = "relu_centered") -> torch.Tensor:
    """Weights ``w`` over S (``D_S = D[S]``), normalised to sum 1.

    ``relu_centered`` (code): max(0, D - mean_S D); about half of S gets weight 0.
    ``raw`` (paper): max(0, D). The paper's w_v = D(v) is clipped because q (Eq. 3) must be a
    distribution: a negative weight would give a negative "probability".
    """
    if mode not in WEIGHT_MODES:
        raise ValueError(f"unknown weight mode {mode!r}; allowed: {', '.join(WEIGHT_MODES)}")
    if D_S.dim() != 1 or D_S.numel() == 0:
        raise ValueError(f"expected a non-empty [K] vector of D over S, got shape {tuple(D_S.shape)}")
    d = D_S.detach()
    w = (d - d.mean()).clamp_min(0) if mode == "relu_centered" else d.clamp_min(0)
    total = w.sum()
    if not total > 0:
        reason = "D is constant over S" if mode == "relu_centered" else "D is <= 0 on every token of S"
        raise ValueError(f"all safety weights are zero ({reason}); the weighted KL would be undefined")
    return w / total


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
        raise ValueError(f"full and no-prompt logits differ in shape: {tuple(z_full_S.shape)} vs {tuple(z_post_S.shape)}")
    if g.dim() > 0:
        if g.shape != z_full_S.shape[:-1]:
            raise ValueError(f"gate shape {tuple(g.shape)} must equal the logits' leading shape {tuple(z_full_S.shape[:-1])}")
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
        raise ValueError(f"model and reference logits differ in shape: {tuple(z_theta_S.shape)} vs {tuple(z_ref_S.shape)}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    q = torch.softmax(z_ref_S.detach().float() / tau, dim=-1)
    if weights is not None:
        if weights.shape != (z_ref_S.shape[-1],):
            raise ValueError(f"weights must be [{z_ref_S.shape[-1]}], got {tuple(weights.shape)}")
        w = weights.detach().to(device=q.device, dtype=q.dtype)
        if (w < 0).any() or not w.sum() > 0:
            raise ValueError("weights must be >= 0 and not all zero")
        q = q * w
        q = q / q.sum(dim=-1, keepdim=True)
    log_p = F.log_softmax(z_theta_S.float() / tau, dim=-1)
    # where(), not q * log_p: a -inf model logit on a zero-weight token must give 0, not NaN.
    cross = torch.where(q > 0, q * log_p, torch.zeros_like(log_p))
    return tau**2 * (torch.xlogy(q, q) - cross).sum(dim=-1)


def weight_conflicts(target_ids: torch.Tensor, safety_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Answer positions whose trained token is a safety token of weight 0 (bool, shaped like ``target_ids``).

    There q gives that token no mass, while the model's restricted distribution still counts it, so the
    KL lowers the very token the cross-entropy raises (relu-centred weights zero about half of S).
    """
    if safety_ids.shape != weights.shape:
        raise ValueError(f"safety_ids and weights differ in shape: {tuple(safety_ids.shape)} vs {tuple(weights.shape)}")
    return torch.isin(target_ids, safety_ids[weights <= 0])


# ---------------------------------------------------------------------------------------------
# Eq. 3-8 assembled


def pact_kl_loss(
    theta_logits: torch.Tensor,
    labels: torch.Tensor,
    safety_ids: torch.Tensor | None,
    weights: torch.Tensor | None,
    ref_full_S: torch.Tensor,
    ref_post_S: torch.Tensor | None,
    answer_pos: torch.Tensor | None,
    *,
    tau_kl: float = DEFAULT_TAU_KL,
    tau_g: float = DEFAULT_TAU_G,
    rho: float = DEFAULT_RHO,
    alpha: float = DEFAULT_ALPHA,
    bias: float = DEFAULT_BIAS,
    t_c: int = DEFAULT_T_C,
    tau_d: float = DEFAULT_TAU_D,
    calibrate: bool,
    decay: bool,
    theta_restricted: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PACT's KL term L_KL (Eq. 3-8, without lambda), a token mean over every answer position of the batch.

    Arguments:
      theta_logits ``[B, T, V]``: the trained model's logits; the only tensor that receives gradient. With
        ``theta_restricted`` they are already ``[B, T, K]``, the columns of ``safety_ids`` (computed from the
        last hidden state, which keeps the backward pass off a dense ``[B, T, V]`` gradient).
      labels ``[B, T]``: unshifted, ``IGNORE_INDEX`` where no loss; position t counts when ``labels[:, t+1]``
        is an answer token.
      safety_ids ``[K]`` or None (full vocabulary: the "full-vocab KL" ablation, K = V).
      weights ``[K]`` or None (uniform).
      ref_full_S ``[B, T, K]``: frozen reference on the full sequence, ALREADY restricted to S and aligned like
        ``theta_logits`` (index t predicts token t+1). Values at non-answer positions are ignored.
      ref_post_S ``[B, T, K]`` or None: the no-prompt reference view placed at the same positions
        (see :func:`tokensafe.losses.pact_reference.align_post_view`); needed when ``calibrate``.
      answer_pos ``[B, T]`` or None: 0-indexed answer position of the token predicted at t; needed when ``decay``.
      calibrate: False -> z_ref = z_full; True -> Eq. 5-7 gate between the two views.
      decay: apply Eq. 8 to the gate (only meaningful with ``calibrate``).

    Returns ``(loss, stats)``; stats holds ``gate_mean`` (the applied gate, after decay; 0 without
    calibration), ``r_theta_mean``, ``r_post_mean`` (NaN without calibration) and ``n_tokens``. With no
    answer position at all the loss is a zero that is still attached to ``theta_logits``.
    """
    if theta_logits.dim() != 3:
        raise ValueError(f"theta_logits must be [B, T, V], got {tuple(theta_logits.shape)}")
    B, T, V = theta_logits.shape
    if labels.shape != (B, T):
        raise ValueError(f"labels must be [{B}, {T}] like theta_logits, got {tuple(labels.shape)}")
    if decay and not calibrate:
        raise ValueError("decay=True scales the calibration gate, so it needs calibrate=True")
    if theta_restricted and (safety_ids is None or V != safety_ids.numel()):
        raise ValueError(f"theta_restricted needs safety_ids and theta_logits of [B, T, K], got last dim {V} for "
                         f"{'no safety_ids' if safety_ids is None else f'K = {safety_ids.numel()}'}")
    if safety_ids is not None:
        if safety_ids.dim() != 1 or safety_ids.numel() == 0:
            raise ValueError(f"safety_ids must be a non-empty [K] vector, got shape {tuple(safety_ids.shape)}")
        if not theta_restricted and (safety_ids.min() < 0 or safety_ids.max() >= V):
            raise ValueError(f"safety_ids must lie in [0, {V}), got range [{int(safety_ids.min())}, {int(safety_ids.max())}]")
    K = V if safety_ids is None else safety_ids.numel()

    def check_ref(name: str, ref: torch.Tensor | None) -> torch.Tensor:
        if ref is None:
            raise ValueError(f"{name} is required with calibrate=True")
        if ref.shape != (B, T, K):
            raise ValueError(f"{name} must be [B, T, K] = [{B}, {T}, {K}] (aligned like theta_logits), got {tuple(ref.shape)}")
        return ref.detach()  # the reference is a target: never let gradient reach it

    z_full = check_ref("ref_full_S", ref_full_S)

    # Shift semantics: position t (0..T-2) predicts labels[:, t+1]; the last position predicts nothing.
    _, shifted_labels = shift_for_next_token(theta_logits, labels)
    mask = torch.zeros(B, T, dtype=torch.bool, device=labels.device)
    mask[:, :-1] = answer_mask(shifted_labels)
    n_tokens = int(mask.sum())
    if n_tokens == 0:
        zero = theta_logits.sum() * 0.0
        return zero, {"gate_mean": 0.0, "r_theta_mean": math.nan, "r_post_mean": math.nan, "n_tokens": 0}

    restrict = safety_ids is not None and not theta_restricted
    z_theta = theta_logits.index_select(-1, safety_ids.to(theta_logits.device)) if restrict else theta_logits
    z_theta_A = z_theta[mask]  # [N, K]
    z_ref_A = z_full[mask].float()
    stats: dict[str, float] = {"gate_mean": 0.0, "r_theta_mean": math.nan, "r_post_mean": math.nan, "n_tokens": n_tokens}

    if calibrate:
        z_post_A = check_ref("ref_post_S", ref_post_S)[mask].float()
        r_theta = dispersion_ratio(z_theta_A, tau_g, rho)  # detached inside: the gate is not trained through
        r_post = dispersion_ratio(z_post_A, tau_g, rho)
        g = gate(r_theta, r_post, alpha, bias)
        if decay:
            if answer_pos is None:
                raise ValueError("answer_pos is required with decay=True")
            if answer_pos.shape != (B, T):
                raise ValueError(f"answer_pos must be [{B}, {T}], got {tuple(answer_pos.shape)}")
            g = g * position_decay(answer_pos[mask].to(g.device), t_c, tau_d)
        z_ref_A = mix_logits(z_ref_A, z_post_A, g)
        stats.update(gate_mean=float(g.mean()), r_theta_mean=float(r_theta.mean()), r_post_mean=float(r_post.mean()))

    per_token = weighted_restricted_kl(z_theta_A, z_ref_A, weights, tau_kl)
    return per_token.sum() / n_tokens, stats


def pact_loss(ce_loss: torch.Tensor, kl_loss: torch.Tensor, lam: float = DEFAULT_LAMBDA) -> torch.Tensor:
    """Eq. 9: ``L = L_CE + lambda * L_KL``; lambda = 3 in the paper (README example 1, code default 0)."""
    return ce_loss + lam * kl_loss


__all__ = [
    "GapAccumulator",
    "dispersion_ratio",
    "gap_statistics",
    "gate",
    "mix_logits",
    "pact_kl_loss",
    "pact_loss",
    "position_decay",
    "safety_weights",
    "select_safety_tokens",
    "weighted_restricted_kl",
]
