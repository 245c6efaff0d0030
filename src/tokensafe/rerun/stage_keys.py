"""Which config keys each preparation stage reads, in one place that the rules and the stage code share.

A rule's params are its rerun triggers (Snakemake reruns a job whose params changed), so a rule passes
exactly the keys its stage function reads: changing PACT's ``lambda`` retrains the PACT runs but redoes
no PACT preparation, and changing TOSS's ``d`` recomputes the masks but retrains no reference model.
Torch-free, so the Snakefile can import it; ``tests/test_stage_keys.py`` checks each stage reads no key
outside its list.
"""

from __future__ import annotations

# config["pact"] keys per PACT preparation stage (tokensafe.methods.pact.safety_tokens, .calibrated_reference);
# the fine-tunes read all of them.
PACT_SAFE_RESPONSES = ("n_prompts", "response_tokens", "filter_refusals")
PACT_SAFETY_TOKENS = ("response_tokens", "k", "token_select", "weights")
PACT_REFERENCE = ()  # the reference signals depend on the fine-tuning set and S only
# ... and per fine-tune, by the rung of the ladder (tokensafe.methods.pact.ladder): every rung weighs its KL with
# lambda at temperature tau_kl; the no-prompt calibration adds the gate's constants, position decay its
# own. The preparation keys reach a fine-tune through its input files (safety tokens, reference signals).
PACT_FINETUNE = ("lambda", "tau_kl")
PACT_CALIBRATION = ("tau_g", "rho", "alpha", "bias")
PACT_DECAY = ("t_c", "tau_d")


def pact_finetune_keys(rung: dict) -> tuple[str, ...]:
    """The config["pact"] keys a fine-tune of this ladder rung reads."""
    return PACT_FINETUNE + (PACT_CALIBRATION if rung["calibrate"] else ()) + (PACT_DECAY if rung["decay"] else ())


# config["toss"] keys per TOSS stage (tokensafe.methods.toss.reference_models). The reference models are LoRA SFT runs;
# the loss dumps score with a reference adapter (an input) in chunks; d and selection only shape the mask.
TOSS_REFERENCE = ("lora", "recipe")
TOSS_LOSSES = ("chunk_size",)


def pick(section: dict, keys: tuple[str, ...]) -> dict:
    """The ``keys`` of a config section (schema defaults filled in), as a stage's method settings."""
    return {k: section[k] for k in keys}
