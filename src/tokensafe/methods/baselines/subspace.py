"""Alignment-subspace baselines: SafeLoRA (Hsu et al., 2024) and AsFT (Yang et al., 2025). Spec section 4.

Both use, for every LoRA target weight, the "alignment matrix"

    V = W_aligned - W_base   ([out, in]),     C = V V^T / ||V||_F   ([out, out]),

exactly as the spec and the official code (``IBM/SafeLoRA``, ``PKU-YuanGroup/AsFT``: ``torch.mm(vec, vec.t()) /
torch.norm(vec)``) write it. Note that C is symmetric PSD but is NOT an orthogonal projector in general: its
eigenvalues are ``sigma_i^2 / ||V||_F`` (sigma_i the singular values of V), so ``C^2 = C`` only when V has a
single non-zero singular value equal to 1 (then C = v v^T). We keep the published formula rather than
"fixing" it, because the baselines' published numbers come from it.

* SafeLoRA (post hoc, after LoRA SFT): score each LoRA module by cos(dW, C dW) (scale-free: B A with or without
  the LoRA scaling); for the N lowest (IBM's default: 10) or those below a threshold, replace dW by C dW. We do
  this as ``lora_B := C @ lora_B``, exact because C (B A) = (C B) A, and it keeps the adapter's format and rank.
* AsFT (during training): add ``lam * sum_l ||(I - C_l) dW_l||_F^2`` to the loss, with dW = B A as the official
  code writes it (no LoRA scaling; ``use_scaling=True`` penalises the applied update B A * scaling instead).

Key mapping. :func:`projectors_from_models` walks plain ``transformers`` models, whose module names look like
``model.layers.0.self_attn.q_proj``; wrapping with ``peft.get_peft_model`` prefixes them with
``base_model.model.`` (so ``base_model.model.model.layers.0.self_attn.q_proj``). Projector dicts are keyed by the
peft name (:func:`peft_key`), which is what :func:`apply_safelora` and :func:`asft_penalty` look up.

Typical use::

    projectors = projectors_from_models(aligned, base, ["q_proj", "v_proj"])     # once (Snakemake rule)
    # AsFT, every step (move projectors to the training device once beforehand):
    loss = ce + asft_penalty(peft_model, projectors, lam=1.0)
    # SafeLoRA, after training, before saving the adapter:
    report = apply_safelora(peft_model, projectors, num_layers=10)
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from tokensafe.io import atomic_path
from tokensafe.methods.registry import FinetuneContext, FinetunePlan
from tokensafe.train.lm_losses import lm_loss
from tokensafe.train.lora import load_model

log = logging.getLogger("tokensafe")

PEFT_PREFIX = "base_model.model."
DEFAULT_ADAPTER = "default"
SAFELORA_NUM_LAYERS = 10  # IBM/SafeLoRA config.py: num_proj_layers, with select_layers_type="number"


def peft_key(name: str) -> str:
    """Name of a plain model's module once the model is wrapped by ``peft.get_peft_model``."""
    return name if name.startswith(PEFT_PREFIX) else PEFT_PREFIX + name


def alignment_projector(w_aligned: torch.Tensor, w_base: torch.Tensor) -> torch.Tensor:
    """``C = V V^T / ||V||_F`` with ``V = w_aligned - w_base`` (float32, ``[out, out]``); see the module doc."""
    if w_aligned.dim() != 2 or w_aligned.shape != w_base.shape:
        raise ValueError(
            f"w_aligned and w_base must be 2-D [out, in] of the same shape; "
            f"got {tuple(w_aligned.shape)} and {tuple(w_base.shape)}"
        )
    v = w_aligned.detach().float() - w_base.detach().to(w_aligned.device).float()
    norm = torch.linalg.matrix_norm(v)  # Frobenius
    if not torch.isfinite(norm):
        raise ValueError("W_aligned - W_base contains non-finite values")
    if norm == 0:
        raise ValueError(
            "W_aligned equals W_base for this layer, so there is no alignment direction to project on "
            "(check that the aligned and base checkpoints differ here)"
        )
    return (v @ v.T) / norm


def safelora_similarity(delta_w: torch.Tensor, C: torch.Tensor) -> float:
    """Cosine ``<dW, C dW>_F / (||dW||_F ||C dW||_F)`` in [0, 1] (C is PSD, so the inner product is >= 0).

    Conventions for the degenerate cases: dW = 0 -> 1.0 (no update, nothing to project: never chosen by a
    threshold below 1); dW != 0 but C dW = 0 -> 0.0 (the update lies entirely outside C's range: the least
    aligned update possible).
    """
    if delta_w.dim() != 2 or C.shape != (delta_w.shape[0], delta_w.shape[0]):
        raise ValueError(f"need delta_w [out, in] and C [out, out]; got {tuple(delta_w.shape)} and {tuple(C.shape)}")
    dw = delta_w.detach().float()
    cdw = C.detach().to(dw.device).float() @ dw
    n_dw = torch.linalg.matrix_norm(dw)
    n_cdw = torch.linalg.matrix_norm(cdw)
    if n_dw == 0:
        return 1.0
    if n_cdw == 0:
        return 0.0
    cos = float((dw * cdw).sum() / (n_dw * n_cdw))
    return min(1.0, max(-1.0, cos))  # rounding can push a parallel update a hair above 1


def choose_safelora_layers(
    similarities: dict[str, float], threshold: float | None = None, num_layers: int | None = None
) -> list[str]:
    """Layers to project, sorted by name: the ``num_layers`` least similar, or those with similarity < threshold.

    Give at most one of ``threshold`` / ``num_layers``; with neither, the ``SAFELORA_NUM_LAYERS`` (10) least
    similar, IBM's default (``config.py``: ``select_layers_type="number"``, ``num_proj_layers=10``). A "layer"
    is one LoRA module, as IBM counts them (``q_proj`` and ``v_proj`` of a block are two). ``num_layers``
    larger than the number of layers selects them all (as the IBM code does). IBM cuts at the
    ``num_layers``-th smallest similarity and projects every layer ``<=`` it, so ties at the cut may project
    more; here ties are broken by name, so exactly ``num_layers`` are chosen. The threshold rule uses strict
    ``<`` as the spec states, where IBM compares ``<=`` on values rounded to 5 decimals.
    """
    if threshold is not None and num_layers is not None:
        raise ValueError(
            f"give at most one of threshold or num_layers; got threshold={threshold}, num_layers={num_layers}"
        )
    bad = {k: v for k, v in similarities.items() if not math.isfinite(v)}
    if bad:
        raise ValueError(f"similarities must be finite; got {bad}")
    if threshold is not None:
        return sorted(name for name, s in similarities.items() if s < threshold)
    if num_layers is None:
        num_layers = SAFELORA_NUM_LAYERS
    if num_layers < 0:
        raise ValueError(f"num_layers must be >= 0; got {num_layers}")
    ranked = sorted(similarities, key=lambda name: (similarities[name], name))
    return sorted(ranked[:num_layers])


def _lora_layers(peft_model: nn.Module, adapter_name: str) -> dict[str, nn.Module]:
    """Every module carrying a LoRA adapter ``adapter_name``, by its name inside ``peft_model``."""
    from peft.tuners.lora import LoraLayer  # local import: peft is heavy and only needed here

    layers: dict[str, nn.Module] = {}
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and adapter_name in module.lora_A:
            if module.use_dora.get(adapter_name, False):
                raise ValueError(f"{name}: DoRA adapters are not supported (dW is not B A * scaling)")
            if getattr(module, "fan_in_fan_out", False):
                raise ValueError(f"{name}: fan_in_fan_out (Conv1D) layers are not supported")
            if module.lora_B[adapter_name].bias is not None:
                raise ValueError(f"{name}: LoRA bias is not supported (the update is not B A alone)")
            layers[name] = module
    if not layers:
        raise ValueError(f"no LoRA layer with adapter {adapter_name!r} found in the model")
    return layers


def _match(layers: dict[str, nn.Module], projectors: dict[str, torch.Tensor], strict: bool) -> list[str]:
    """Names present in both; raise on projectors without a LoRA layer, and (strict) on uncovered LoRA layers."""
    if not projectors:
        raise ValueError("projectors is empty")
    missing = sorted(set(projectors) - set(layers))
    if missing:
        raise ValueError(
            f"{len(missing)} projector key(s) name no LoRA layer, e.g. {missing[:3]}; keys must be peft module "
            f"names (use peft_key), e.g. {sorted(layers)[:2]}"
        )
    uncovered = sorted(set(layers) - set(projectors))
    if strict and uncovered:
        raise ValueError(f"{len(uncovered)} LoRA layer(s) have no projector, e.g. {uncovered[:3]} (strict=True)")
    return sorted(projectors)


def _delta_w(module: nn.Module, adapter_name: str, use_scaling: bool = True) -> torch.Tensor:
    """``B A * scaling`` in float32, differentiable w.r.t. ``lora_A`` / ``lora_B``."""
    a = module.lora_A[adapter_name].weight.float()
    b = module.lora_B[adapter_name].weight.float()
    dw = b @ a
    return dw * float(module.scaling[adapter_name]) if use_scaling else dw


def apply_safelora(
    peft_model: nn.Module,
    projectors: dict[str, torch.Tensor],
    threshold: float | None = None,
    num_layers: int | None = None,
    *,
    adapter_name: str = DEFAULT_ADAPTER,
    strict: bool = True,
) -> dict:
    """SafeLoRA in place: for the chosen layers replace dW by C dW (``lora_B := C @ lora_B``).

    Layer choice is :func:`choose_safelora_layers` on the per-layer :func:`safelora_similarity` computed before
    any change (neither rule given: IBM's 10 least similar LoRA modules). With ``strict`` every LoRA layer of
    the adapter must have a projector. Returns a JSON-ready report
    ``{"layers": {name: {"similarity", "projected"}}, "num_projected", "threshold", "num_layers"}``.
    """
    layers = _lora_layers(peft_model, adapter_name)
    names = _match(layers, projectors, strict)
    sims: dict[str, float] = {}
    for name in names:
        module = layers[name]
        C = projectors[name]
        out = module.lora_B[adapter_name].weight.shape[0]
        if C.shape != (out, out):
            raise ValueError(f"{name}: projector must be [{out}, {out}]; got {tuple(C.shape)}")
        sims[name] = safelora_similarity(_delta_w(module, adapter_name), C)
    if threshold is None and num_layers is None:
        num_layers = SAFELORA_NUM_LAYERS
    chosen = set(choose_safelora_layers(sims, threshold=threshold, num_layers=num_layers))

    with torch.no_grad():
        for name in chosen:
            weight = layers[name].lora_B[adapter_name].weight
            C = projectors[name].to(device=weight.device, dtype=torch.float32)
            weight.copy_((C @ weight.float()).to(weight.dtype))

    return {
        "layers": {name: {"similarity": sims[name], "projected": name in chosen} for name in names},
        "num_projected": len(chosen),
        "threshold": threshold,
        "num_layers": num_layers,
    }


def projectors_from_models(
    aligned_model: nn.Module, base_model: nn.Module, target_modules: list[str]
) -> dict[str, torch.Tensor]:
    """C per target Linear layer (name ending in ``.<target>``), keyed by :func:`peft_key` of its name.

    Both models must be plain (unwrapped) models with the same module names and shapes. Projectors are float32
    on the aligned weight's device.
    """
    if not target_modules:
        raise ValueError("target_modules is empty")
    base_modules = dict(base_model.named_modules())
    projectors: dict[str, torch.Tensor] = {}
    for name, module in aligned_model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if not any(name == t or name.endswith("." + t) for t in target_modules):
            continue
        base = base_modules.get(name)
        if not isinstance(base, nn.Linear):
            raise ValueError(f"{name}: the base model has no Linear module of that name")
        if base.weight.shape != module.weight.shape:
            raise ValueError(
                f"{name}: shape differs between aligned {tuple(module.weight.shape)} and base "
                f"{tuple(base.weight.shape)}"
            )
        try:
            projectors[peft_key(name)] = alignment_projector(module.weight, base.weight)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from exc
    if not projectors:
        raise ValueError(f"no Linear module matches target_modules {target_modules}")
    return projectors


def asft_penalty(
    peft_model: nn.Module,
    projectors: dict[str, torch.Tensor],
    lam: float = 1.0,
    *,
    adapter_name: str = DEFAULT_ADAPTER,
    use_scaling: bool = False,
    strict: bool = True,
) -> torch.Tensor:
    """AsFT regulariser ``lam * sum_l ||(I - C_l) dW_l||_F^2`` (float32 scalar, differentiable w.r.t. LoRA).

    By default ``dW = B A``, as the official AsFT code (``utils/AsFT_train_utils.py``) computes it, without the
    LoRA scaling. ``use_scaling=True`` uses ``B A * scaling``, the update the model actually applies: the
    penalty is then ``scaling^2`` times larger (16x with r 8, alpha 32). Projectors are moved to each layer's
    device per call: move them once beforehand.
    """
    layers = _lora_layers(peft_model, adapter_name)
    names = _match(layers, projectors, strict)
    total = None
    for name in names:
        dw = _delta_w(layers[name], adapter_name, use_scaling)
        C = projectors[name].to(device=dw.device, dtype=torch.float32)
        if C.shape != (dw.shape[0], dw.shape[0]):
            raise ValueError(f"{name}: projector must be [{dw.shape[0]}, {dw.shape[0]}]; got {tuple(C.shape)}")
        residual = dw - C @ dw  # (I - C) dW without materialising I
        term = residual.pow(2).sum()
        total = term if total is None else total + term
    return lam * total


# --------------------------------------------------------------------------------------------------
# The projectors stage and the two objectives


def write_projectors(*, aligned: str, base: str, target_modules: list[str], out: str, dtype: str = "auto") -> None:
    """C_l = V V^T / ||V||_F with V = W_aligned - W_base, for every LoRA target layer (docs/methods.md §4)."""
    a = load_model(aligned, dtype)
    b = load_model(base, dtype)
    proj = projectors_from_models(a, b, target_modules)
    with atomic_path(out) as tmp:
        torch.save({k: v.cpu() for k, v in proj.items()}, tmp)
    log.info("projectors for %d layers: %s ...", len(proj), ", ".join(list(proj)[:3]))


def _projectors(ctx: FinetuneContext) -> dict[str, torch.Tensor]:
    device = next(ctx.model.parameters()).device
    return {k: v.to(device) for k, v in torch.load(ctx.inputs["projectors"], weights_only=True).items()}


def build_safelora(ctx: FinetuneContext) -> FinetunePlan:
    cfg = ctx.method_settings
    proj = _projectors(ctx)

    def project(model) -> dict:
        return apply_safelora(model, proj, threshold=cfg.get("threshold"), num_layers=cfg.get("num_layers"))

    return FinetunePlan(ctx.examples, lm_loss, after_training=project, info=dict(cfg))


def build_asft(ctx: FinetuneContext) -> FinetunePlan:
    lam = ctx.method_settings["lambda"]
    scaling = ctx.method_settings.get("scaling", False)  # the schema's default: the official B A
    if not isinstance(scaling, bool):
        raise ValueError(f"baselines.asft.scaling must be true or false; got {scaling!r}")
    proj = _projectors(ctx)

    def loss_fn(model, batch):
        ce, _ = lm_loss(model, batch)
        pen = asft_penalty(model, proj, lam, use_scaling=scaling)
        return ce + pen, {"ce": float(ce.detach()), "penalty": float(pen.detach())}

    return FinetunePlan(ctx.examples, loss_fn, info={"lambda": lam, "scaling": scaling})
