"""Where every data file a preset reads comes from, and how it is made (``python -m tokensafe.data.fetch``).

An :class:`Entry` writes one or more files under the run directory (the paths a preset's ``data.<role>.path``
names) from upstream files (:class:`Upstream`: a GitHub file at a commit, or a Hugging Face hub data-set file at
a revision). Its ``build`` turns the downloaded upstream files (and, for derived files, other entries' written
files, ``needs``) into the bytes to write; ``preparation`` says in words what it did, for the lock file.

Revisions: every GitHub source below is pinned to a commit. A hub source is pinned where its commit could be
checked against public material (the ``pinned_by`` note says how); where ``revision`` is None, the first fetch
records the commit the hub serves in data/SOURCES.lock.json and later fetches read that commit (``--update``
moves it). ``sha256`` is the upstream file's digest where it is known in advance; otherwise the first fetch
records it and a later fetch at the same commit must match it.
"""

from __future__ import annotations

from tokensafe.data.fetch.derive import (
    beavertails_harmful,
    copy_files,
    jbb_with_subset,
    red_team_pairs,
    split_slimorca,
    tail_lines,
)
from tokensafe.data.fetch.upstream import DATA_SEED, Entry, Upstream

GSM8K_COMMIT = "3101c7d5072418e28b9008a6636bde82a006892c"
ADVBENCH_COMMIT = "098262edf85f807224e70ecd87b9d83716bf6b73"  # upstream main; the file last changed in a62d1307
PACT_COMMIT = "530c1c13958946424722927dfe514c8179aadd18"
SAFETY_LLAMAS_COMMIT = "3ce5779d564ec1f3d87b0bef87261328c8abbd25"

HEXPHI_CATEGORIES = (1, 3, 4, 5, 6, 7, 8, 9, 10, 11)  # category_2.csv is withheld upstream (300 public prompts)


def _gsm8k(split: str, sha: str) -> Upstream:
    return Upstream(
        "github",
        "openai/grade-school-math",
        f"grade_school_math/data/{split}.jsonl",
        GSM8K_COMMIT,
        "MIT",
        sha,
        pinned_by="commit and sha256 of the published file",
    )


def _entries() -> list[Entry]:
    hexphi = {
        f"category_{i}": Upstream(
            "hub",
            "LLM-Tuning-Safety/HEx-PHI",
            f"category_{i}.csv",
            None,
            "HEx-PHI terms of use (accepted on the data set's page)",
            gated=True,
        )
        for i in HEXPHI_CATEGORIES
    }
    return [
        Entry(
            "gsm8k_train",
            ("data/gsm8k/train.jsonl",),
            {"train": _gsm8k("train", "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465")},
            copy_files({"data/gsm8k/train.jsonl": "train"}),
            "copied unchanged",
        ),
        Entry(
            "gsm8k_test",
            ("data/gsm8k/test.jsonl",),
            {"test": _gsm8k("test", "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14")},
            copy_files({"data/gsm8k/test.jsonl": "test"}),
            "copied unchanged",
        ),
        Entry(
            "gsm8k_utility_ref",
            ("data/gsm8k/utility_ref.jsonl",),
            {},
            tail_lines,
            "the last 1,000 lines of data/gsm8k/train.jsonl, byte for byte (the gsm8k TOSS preset's task reads the "
            "first 6,473 rows, so D^u is disjoint from every fine-tuning set)",
            needs=("data/gsm8k/train.jsonl",),
            params={"from": "data/gsm8k/train.jsonl", "n": 1000, "out": "data/gsm8k/utility_ref.jsonl"},
        ),
        Entry(
            "advbench",
            ("data/advbench/harmful_behaviors.csv",),
            {
                "csv": Upstream(
                    "github",
                    "llm-attacks/llm-attacks",
                    "data/advbench/harmful_behaviors.csv",
                    ADVBENCH_COMMIT,
                    "MIT",
                    "6cd1a5c63c07610d7eb67307772ee5606017ee950b5770ab288a2c487489d3e1",
                    pinned_by="main's head commit; the file is unchanged since "
                    "a62d1307e38b3a076e614b20781c785fd860d813",
                )
            },
            copy_files({"data/advbench/harmful_behaviors.csv": "csv"}, header=True),
            "copied unchanged (520 goal/target rows)",
        ),
        Entry(
            "strongreject",
            ("data/strongreject/strongreject_dataset.csv",),
            {
                "csv": Upstream(
                    "github",
                    "alexandrasouly/strongreject",
                    "strongreject_dataset/strongreject_dataset.csv",
                    None,
                    "MIT",
                    pinned_by="no commit verified: main's commit is recorded at the first fetch",
                )
            },
            copy_files({"data/strongreject/strongreject_dataset.csv": "csv"}, header=True),
            "copied unchanged (category, source, forbidden_prompt; 313 rows)",
        ),
        Entry(
            "pact_safe_direction",
            ("data/pact/safe_direction.json",),
            {
                "json": Upstream(
                    "github",
                    "Glresearch1/PACT",
                    "compute_safety_tokens/safe_direction.json",
                    PACT_COMMIT,
                    "none stated in the repository",
                    pinned_by="the commit the file was published at",
                )
            },
            copy_files({"data/pact/safe_direction.json": "json"}),
            "copied unchanged (input, output, guard_decision)",
        ),
        Entry(
            "jailbreakbench",
            ("data/jailbreakbench/jailbreakbench.csv",),
            {
                name: Upstream(
                    "hub",
                    "JailbreakBench/JBB-Behaviors",
                    f"data/{name}-behaviors.csv",
                    "886acc352a31533ffbcf4ef22c744658688086fc",
                    "MIT",
                    pinned_by="revision pinned in public code that reads these files",
                )
                for name in ("harmful", "benign")
            },
            jbb_with_subset,
            "harmful-behaviors.csv then benign-behaviors.csv, their Index column dropped, with a subset column "
            "(harmful / benign)",
            params={"out": "data/jailbreakbench/jailbreakbench.csv"},
        ),
        Entry(
            "harmbench",
            ("data/harmbench/harmbench_behaviors_text_all.csv",),
            {
                "csv": Upstream(
                    "github",
                    "centerforaisafety/HarmBench",
                    "data/behavior_datasets/harmbench_behaviors_text_all.csv",
                    None,
                    "MIT",
                    pinned_by="no commit verified: main's commit is recorded at the first fetch",
                )
            },
            copy_files({"data/harmbench/harmbench_behaviors_text_all.csv": "csv"}, header=True),
            "copied unchanged (the format keeps the FunctionalCategory 'standard' rows)",
        ),
        Entry(
            "sst2",
            tuple(f"data/sst2/{s}-00000-of-00001.parquet" for s in ("train", "validation")),
            {
                s: Upstream(
                    "hub",
                    "nyu-mll/glue",
                    f"sst2/{s}-00000-of-00001.parquet",
                    "bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c",
                    "see the GLUE / SST-2 terms",
                    pinned_by="revision pinned in public code that reads these files",
                )
                for s in ("train", "validation")
            },
            copy_files({f"data/sst2/{s}-00000-of-00001.parquet": s for s in ("train", "validation")}),
            "GLUE sst2 parquet shards copied unchanged (the test split is unlabelled and not fetched)",
        ),
        Entry(
            "ag_news",
            tuple(f"data/ag_news/{s}-00000-of-00001.parquet" for s in ("train", "test")),
            {
                s: Upstream(
                    "hub",
                    "fancyzhx/ag_news",
                    f"data/{s}-00000-of-00001.parquet",
                    None,
                    "see the data set's card (AG's corpus: non-commercial use)",
                )
                for s in ("train", "test")
            },
            copy_files({f"data/ag_news/{s}-00000-of-00001.parquet": s for s in ("train", "test")}),
            "parquet shards copied unchanged",
        ),
        Entry(
            "hexphi",
            tuple(f"data/hexphi/category_{i}.csv" for i in HEXPHI_CATEGORIES),
            hexphi,
            copy_files({f"data/hexphi/category_{i}.csv": f"category_{i}" for i in HEXPHI_CATEGORIES}),
            "the 10 public headerless category_<n>.csv files copied unchanged (category_2 is not published)",
        ),
        Entry(
            "safety_demos",
            ("data/safety/safety_only_data_Instructions.json",),
            {
                "json": Upstream(
                    "github",
                    "vinid/safety-tuned-llamas",
                    "data/training/safety_only_data_Instructions.json",
                    SAFETY_LLAMAS_COMMIT,
                    "none stated in the repository",
                    pinned_by="the commit the file was published at",
                )
            },
            copy_files({"data/safety/safety_only_data_Instructions.json": "json"}),
            "copied unchanged (instruction, input, output)",
        ),
        Entry(
            "red_team",
            ("data/toss/red_team.jsonl",),
            {
                "red_team": Upstream(
                    "hub",
                    "Anthropic/hh-rlhf",
                    "red-team-attempts/red_team_attempts.jsonl.gz",
                    "09be8c5bbc57cb3887f3a9732ad6aa7ec602a1fa",
                    "MIT",
                    pinned_by="revision pinned in public code that reads this data set",
                )
            },
            red_team_pairs,
            "each transcript's first Human turn -> prompt and the first Assistant turn after it -> response "
            "(stripped); transcripts with an empty turn dropped",
            params={"out": "data/toss/red_team.jsonl", "min_rows": 22400},
        ),
        Entry(
            "slimorca",
            ("data/toss/slimorca_pool.jsonl", "data/toss/slimorca_utility_ref.jsonl", "data/toss/slimorca_eval.jsonl"),
            {
                "slimorca": Upstream(
                    "hub",
                    "Open-Orca/SlimOrca",
                    "oo-labeled_correct.gpt4.sharegpt.jsonl",
                    "ce9ed009ef3292bac33d3520afaf5ec804066120",
                    "MIT",
                    pinned_by="revision pinned in public material that reads this data set",
                )
            },
            split_slimorca,
            "ShareGPT conversations -> prompt = the system message, a blank line, the first human turn (the "
            "system message is omitted where empty), response = the first gpt turn; rows with an empty turn and "
            "rows repeating a normalised human turn dropped; a seeded permutation (seed 0) split into 112,000 pool "
            "rows, 22,400 D^u rows and 500 eval rows (eval: the answer is also the reference)",
            params={
                "seed": DATA_SEED,
                "sizes": {
                    "data/toss/slimorca_pool.jsonl": 112000,
                    "data/toss/slimorca_utility_ref.jsonl": 22400,
                    "data/toss/slimorca_eval.jsonl": 500,
                },
                "reference": "data/toss/slimorca_eval.jsonl",
            },
        ),
        Entry(
            "harmful_ref",
            ("data/toss/harmful_ref.jsonl",),
            {
                "beavertails": Upstream(
                    "hub",
                    "PKU-Alignment/BeaverTails",
                    "round0/330k/train.jsonl.xz",
                    "8401fe609d288129cc684a9b3be6a93e41cfe678",
                    "CC BY-NC 4.0",
                    "12f04c9200000929ebbc616c29cb53331f6df36e7341d73e4a12cffac0eb1c08",
                    pinned_by="revision and sha256 recorded in public material that pins this file",
                )
            },
            beavertails_harmful,
            "330k train rows with is_safe false, minus rows whose normalised prompt (lowercase, whitespace "
            "collapsed, punctuation stripped at the ends) is a red_team.jsonl, AdvBench or HEx-PHI prompt, minus "
            "repeated (prompt, response) pairs; a seeded sample (seed 0) of 22,400 in file order",
            needs=("data/toss/red_team.jsonl", "data/advbench/harmful_behaviors.csv", "data/hexphi"),
            optional_needs=("data/hexphi",),
            params={
                "out": "data/toss/harmful_ref.jsonl",
                "n": 22400,
                "seed": DATA_SEED,
                "exclude": {
                    "data/toss/red_team.jsonl": "generic",
                    "data/advbench/harmful_behaviors.csv": "advbench",
                    "data/hexphi": "hexphi",
                },
            },
        ),
    ]


CATALOG: dict[str, Entry] = {e.name: e for e in _entries()}

# Gated models a preset may name: the page to accept the terms on is https://huggingface.co/<id>.
GATED_MODEL_PREFIXES = ("meta-llama/",)


def entry_for(path: str, catalog: dict[str, Entry]) -> Entry | None:
    return next((e for e in catalog.values() if e.produces(path)), None)
