"""PACT's safety tokens: probability gaps between the aligned and the base model (Eq. 1-2), the safety
set S and its weights w (docs/methods.md §2.1-2.2, §A2), and where those weights fight the cross-entropy.

Paper-vs-code switches (the defaults follow the code):

* ``select_safety_tokens(mode=...)``: ``"prob"`` (code, default) ranks tokens by the mean aligned-model
  probability p_bar; ``"discrepancy"`` (paper) ranks them by D.
* ``safety_weights(mode=...)``: ``"relu_centered"`` (code, default) w = max(0, D - mean_S D), which is what
  the code's z-score -> L2-normalise -> relu of D over S reduces to once q is renormalised;
  ``"raw"`` (paper) w = max(0, D). Both are returned normalised to sum 1; the scale never matters because
  q is renormalised in Eq. 3.
"""

from __future__ import annotations

import torch

TOKEN_SELECT_MODES = ("prob", "discrepancy")
WEIGHT_MODES = ("relu_centered", "raw")
DEFAULT_K = 50


def gap_statistics(p_aligned: torch.Tensor, p_base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 averaged over the positions of ONE sample.

    ``p_aligned`` ``[R, V_s]`` and ``p_base`` ``[R, V_b]`` are the two models' next-token probabilities
    (temperature 1) at the ``R`` response positions. Returns ``(mean_t Delta_t, mean_t p_aligned)``, both
    ``[min(V_s, V_b)]`` in float64: when the vocabularies differ (padded embedding rows, docs/methods.md §A5) only the
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


def select_safety_tokens(D: torch.Tensor, pbar: torch.Tensor, k: int = DEFAULT_K, mode: str = "prob") -> torch.Tensor:
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


def weight_conflicts(target_ids: torch.Tensor, safety_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Answer positions whose trained token is a safety token of weight 0 (bool, shaped like ``target_ids``).

    There q gives that token no mass, while the model's restricted distribution still counts it, so the
    KL lowers the very token the cross-entropy raises (relu-centred weights zero about half of S).
    """
    if safety_ids.shape != weights.shape:
        raise ValueError(f"safety_ids and weights differ in shape: {tuple(safety_ids.shape)} vs {tuple(weights.shape)}")
    return torch.isin(target_ids, safety_ids[weights <= 0])
