"""`snakemake --lint` on the default config, failing on any lint not accepted below with its reason.

Run by `make lint` (and so by `make test`). Snakemake's text output is parsed: one block per snakefile or rule,
one "* <lint>:" line per finding.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (lint title prefix, where it may appear: a regex over "snakefile <path>" / "rule <name>") -> why it stays.
ACCEPTED = {
    (
        "Mixed rules and functions in same snakefile",
        r"snakefile .*/rules/(common|data|toss|evaluate|llm_judge)\.smk",
    ): "a rule file holds its rules and the short input functions only they use (a path from the wildcards); "
    "everything else is in tokensafe.plan (docs/architecture.md); common.smk's are shared by every rule file",
    (
        "Specify a conda environment or container for each rule",
        r"rule \w+",
    ): "rules run in the environment Snakemake runs in (.venv from requirements.lock, or envs/tokensafe.yaml "
    "activated by the user); only generate and judge switch environment (envs/vllm.yaml) under --sdm conda",
    (
        "Param aligned is a prefix of input or output file but hardcoded",
        r"rule \w+",
    ): "the param is the model reference, which is a hub id when the model is not a local folder; the input "
    "only tracks the folder when there is one (model_input in common.smk)",
    ("Param base is a prefix of input or output file but hardcoded", r"rule \w+"): "as for aligned",
    ("Param guard is a prefix of input or output file but hardcoded", r"rule \w+"): "as for aligned",
    ("Param tokenizer is a prefix of input or output file but hardcoded", r"rule data_card"): "as for aligned (the "
    "aligned model's tokenizer: the embedded world's tokenizer folder, a local folder or a hub id)",
    ("Param judge_model is a prefix of input or output file but hardcoded", r"rule \w+"): "as for aligned (the "
    "LLM judge's model reference: a local folder, a hub id, or the embedded stand-in's folder)",
}


def lints(text: str) -> list[tuple[str, str]]:
    found, where = [], None
    for line in text.splitlines():
        head = re.match(r"^Lints for (snakefile (\S+)|rule (\w+) \(line \d+, (\S+)\)):$", line)
        if head:
            where = f"snakefile {head.group(2)}" if head.group(2) else f"rule {head.group(3)}"
            continue
        item = re.match(r"^    \* (.+?):?$", line)
        if item and where:
            found.append((where, item.group(1)))
    return found


def unaccepted(found: list[tuple[str, str]]) -> list[str]:
    bad = []
    for where, title in found:
        if not any(title.startswith(t) and re.fullmatch(w, where) for t, w in ACCEPTED):
            bad.append(f"{where}: {title}")
    return bad


def main() -> int:
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--nolock"],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    text = proc.stdout + proc.stderr
    if proc.returncode not in (0, 1) or "Traceback" in text:
        print(text)
        return 2
    found = lints(text)
    bad = unaccepted(found)
    for line in bad:
        print(f"snakemake --lint: {line}")
    print(f"snakemake --lint: {len(found)} lint(s), {len(found) - len(bad)} accepted (tests/lint_workflow.py)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
