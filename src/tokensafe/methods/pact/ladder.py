"""PACT and its ablation ladder (PACT Table 5), as data: which parts of the objective each method uses.

| method        | tokens | weights | no-prompt calibration | position decay |
|---------------|--------|---------|-----------------------|----------------|
| pact_fullkl   | all V  | -       | -                     | -              |
| pact_tokens   | S      | -       | -                     | -              |
| pact_weights  | S      | w       | -                     | -              |
| pact_noprompt | S      | w       | yes                   | -              |
| pact          | S      | w       | yes                   | yes            |

No torch here: the workflow reads it when it plans jobs (which methods need the safety tokens, the
cached reference signals or the weights), the fine-tuning code when it builds the loss.
"""

# In ladder order; ``step`` is the row's name in PACT's Table 5 (the report's ladder section).
LADDER = {
    "pact_fullkl": dict(step="Full-vocab KL", tokens=False, weights=False, calibrate=False, decay=False),
    "pact_tokens": dict(step="+ safety tokens", tokens=True, weights=False, calibrate=False, decay=False),
    "pact_weights": dict(step="+ safety weights", tokens=True, weights=True, calibrate=False, decay=False),
    "pact_noprompt": dict(step="+ no-prompt reference", tokens=True, weights=True, calibrate=True, decay=False),
    "pact": dict(step="+ position decay (full PACT)", tokens=True, weights=True, calibrate=True, decay=True),
}
