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

LADDER = {
    "pact_fullkl": dict(tokens=False, weights=False, calibrate=False, decay=False),
    "pact_tokens": dict(tokens=True, weights=False, calibrate=False, decay=False),
    "pact_weights": dict(tokens=True, weights=True, calibrate=False, decay=False),
    "pact_noprompt": dict(tokens=True, weights=True, calibrate=True, decay=False),
    "pact": dict(tokens=True, weights=True, calibrate=True, decay=True),
}
