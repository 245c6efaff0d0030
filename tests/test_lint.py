"""The `snakemake --lint` gate (tests/lint_workflow.py) parses Snakemake's findings and accepts only listed ones."""

from lint_workflow import lints, unaccepted

SAMPLE = """Lints for snakefile /w/workflow/rules/toss.smk:
    * Mixed rules and functions in same snakefile.:
      Small one-liner functions used only once should be defined as lambda

Lints for rule world_tokenizer (line 25, /w/workflow/rules/world.smk):
    * Specify a conda environment or container for each rule.:
      This way, the used software for each specific step is documented, and the
    * Param data_dir is a prefix of input or output file but hardcoded:
      If this is meant to represent a file path prefix, it will fail when
"""


def test_findings_are_parsed_per_snakefile_and_rule():
    assert lints(SAMPLE) == [
        ("snakefile /w/workflow/rules/toss.smk", "Mixed rules and functions in same snakefile."),
        ("rule world_tokenizer", "Specify a conda environment or container for each rule."),
        ("rule world_tokenizer", "Param data_dir is a prefix of input or output file but hardcoded"),
    ]


def test_only_the_listed_findings_are_accepted():
    assert unaccepted(lints(SAMPLE)) == [
        "rule world_tokenizer: Param data_dir is a prefix of input or output file but hardcoded"
    ]
    # a listed lint in a file it is not accepted for still fails
    other = "Lints for snakefile /w/workflow/rules/report.smk:\n    * Mixed rules and functions in same snakefile.:\n"
    assert unaccepted(lints(other)) == [
        "snakefile /w/workflow/rules/report.smk: Mixed rules and functions in same snakefile."
    ]
