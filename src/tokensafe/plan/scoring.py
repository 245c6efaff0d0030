"""Settings that could only give a meaningless score, refused at planning (:func:`tokensafe.config.check_semantics`).

- A task metric that cannot read the task test set's references: SST-2 labels scored as numbers, or GSM8K
  numbers scored as labels, give accuracy 0 whatever the model answers.
- The embedded models on real data sets: they know only the embedded world's words, so task accuracy is 0 and
  their answers are babble. ``models.embedded_on_real_data: true`` says the run is a plumbing check.

A metric without an exact-match reading (anything but ``number`` and the label metrics) has nothing to check.
"""

from __future__ import annotations

import pandas as pd

from tokensafe import modelref
from tokensafe.data.roles import ROLES
from tokensafe.eval.utility.answers import TASK_LABELS, can_match

CHECKED_METRICS = ("number", *TASK_LABELS)


def _readable_by(references: list[str]) -> str | None:
    """The metric that reads every reference, if one does (the setting to suggest)."""
    return next((m for m in CHECKED_METRICS if all(can_match(r, m) for r in references)), None)


def metric_problems(data_cfg: dict, task_eval: pd.DataFrame | None) -> list[str]:
    """``data.task_metric`` against the references of ``data.task_eval`` (the loaded table; None: not loaded
    here, a hub source)."""
    metric = data_cfg.get("task_metric", "number")
    if metric not in CHECKED_METRICS:
        return []
    key = f"data.task_metric = {metric}"
    spec = data_cfg.get("task_eval")
    if spec == "embedded":
        if metric == "number":
            return []
        return [
            f"{key}: data.task_eval embedded holds the embedded world's numeric answers; set data.task_metric: number"
        ]
    if task_eval is None:
        return []
    refs = [str(r) for r in task_eval["reference"] if r is not None]
    bad = [(sid, r) for sid, r in zip(task_eval["sample_id"], task_eval["reference"]) if r is not None]
    bad = [(sid, r) for sid, r in bad if not can_match(str(r), metric)]
    if not bad:
        return []
    wanted = "numbers" if metric == "number" else f"{metric} labels ({', '.join(TASK_LABELS[metric])})"
    other = _readable_by(refs)
    fix = f"set data.task_metric: {other}" if other else "map the reference column to the answers the metric reads"
    sid, ref = bad[0]
    where = spec.get("path") or spec.get("hub")
    return [
        f"{key}: {len(bad)} of {len(refs)} references of data.task_eval ({where}) are not {wanted}, so those answers "
        f"always score 0 (e.g. row {sid}: reference {ref!r}); {fix}"
    ]


def embedded_model_problems(config: dict) -> list[str]:
    """Real data sets under the embedded models, unless ``models.embedded_on_real_data`` acknowledges it."""
    models = config["models"]
    if not modelref.is_embedded(models["aligned"]) or models.get("embedded_on_real_data", False):
        return []
    real = [f"data.{role}" for role in ROLES if isinstance(config["data"].get(role), dict)]
    if not real:
        return []
    return [
        f"{', '.join(real)}: real data with models.aligned embedded: the embedded models know only the embedded "
        "world's words, so task accuracy is 0 and their answers are babble. Point models.base and models.aligned "
        "at real models, or set models.embedded_on_real_data: true to run the pipeline on this data anyway "
        "(a plumbing check)"
    ]
