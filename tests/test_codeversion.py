"""Code versions (tokensafe.rerun.codeversion): what each stage script's hash covers, and what it ignores."""

from tokensafe.rerun import codeversion

from workflow_utils import REPO

SCRIPTS = REPO / "workflow" / "scripts"


def test_the_closure_follows_imports_and_leaves_out_the_job_infrastructure():
    report = codeversion.closure(str(SCRIPTS / "report.py"))
    assert (
        "tokensafe.stages.report" in report and "tokensafe.io" in report and "tokensafe.methods.pact.ladder" in report
    )
    assert not set(report) & codeversion.INFRASTRUCTURE and "tokensafe.methods.toss.reference_models" not in report
    finetune = codeversion.closure(str(SCRIPTS / "finetune.py"))
    # followed through the method registry to the method objectives and their losses
    assert {"tokensafe.stages.finetune", "tokensafe.methods.registry", "tokensafe.train.loop"} <= set(finetune)
    # ... named as "module:function" strings in tokensafe.methods.registry.METHODS
    assert {
        "tokensafe.methods.pact.kl",
        "tokensafe.methods.toss.scores",
        "tokensafe.methods.baselines.subspace",
    } <= set(finetune)


def test_comments_formatting_and_docstrings_change_no_version(tmp_path, monkeypatch):
    pkg = tmp_path / "tokensafe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "stage.py").write_text('"""Doc."""\n\ndef f(x):\n    """Doc."""\n    return x + 1\n')
    script = tmp_path / "script.py"
    script.write_text("from tokensafe.stage import f\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in list(__import__("sys").modules) if m == "tokensafe" or m.startswith("tokensafe.")]:
        monkeypatch.delitem(__import__("sys").modules, name)
    codeversion.clear_caches()
    try:
        before = codeversion.code_version(str(script))
        (pkg / "stage.py").write_text(
            '"""Other words."""\n# a comment\n\ndef f(x):\n    """More."""\n\n    return x  +  1\n'
        )
        codeversion.clear_caches()
        assert codeversion.code_version(str(script)) == before
        (pkg / "stage.py").write_text("def f(x):\n    return x + 2\n")
        codeversion.clear_caches()
        assert codeversion.code_version(str(script)) != before
    finally:
        codeversion.clear_caches()
