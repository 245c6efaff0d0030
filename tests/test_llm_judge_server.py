"""The LLM-judge stages against a real OpenAI-compatible server: vLLM's API server (the vLLM environment) serving
a tiny random Llama. Its verdicts are noise - mostly unparsable, which is the point: they must be counted as
invalid, never read as safe or as a win - but every request, parse, cache and retry path is the real one, and
request counts are vLLM's own (``vllm:request_success_total`` on ``/metrics``), not only the client's.

Skipped, with the reason, where the vLLM environment is missing: ``.venv-vllm`` at the repository root (`make
vllm`), or the interpreter ``TOKENSAFE_VLLM_PYTHON`` names.

The judge model's chat template accepts a system turn (rendered like a user turn), because two of the
published judges (AlpacaEval, StrongREJECT) send one; the client sends the published messages unchanged.
"""

import hashlib
import math
import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tokensafe.eval.generation.vllm_backend import vllm_env_problem
from tokensafe.eval.llm_judge.judge_client import JudgeUnavailable
from tokensafe.eval.llm_judge.openai_server import OpenAIServer
from tokensafe.eval.llm_judge.pairwise import ALPACA_EVAL_GPT4
from tokensafe.eval.llm_judge.rubrics import HEXPHI_META_TEMPLATE, HEXPHI_OPENAI_TEMPLATE, STRONGREJECT_TEMPLATE
from tokensafe.io import read_parquet, write_parquet
from tokensafe.stages.llm_judge_scores import run_rubrics, run_win_rate, summary_rows

from workflow_utils import REPO

VLLM_PYTHON = os.environ.get("TOKENSAFE_VLLM_PYTHON") or str(REPO / ".venv-vllm" / "bin" / "python")
PROBLEM = vllm_env_problem(VLLM_PYTHON)
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=f"{PROBLEM} (run `make vllm`)")

MAX_LEN = 4096
SYSTEM_OK_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}<|end|>"
    "{% else %}<|user|>{{ m['content'] }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_judge_model(folder: Path) -> None:
    """A random Llama with head size 32 (vLLM's CPU attention takes 32, 64, 80, ...) and a BPE tokenizer trained
    on the judge prompts, so that the longest prompt fits ``MAX_LEN`` tokens."""
    from tokensafe.world.tokenizer import train_tokenizer

    from tiny_models import tiny_llama

    texts = [HEXPHI_OPENAI_TEMPLATE, HEXPHI_META_TEMPLATE, STRONGREJECT_TEMPLATE, ALPACA_EVAL_GPT4]
    tok = train_tokenizer(texts * 4, 2000)
    tok.chat_template = SYSTEM_OK_TEMPLATE
    model = tiny_llama(
        len(tok),
        hidden=64,
        intermediate=128,
        layers=2,
        heads=2,
        max_positions=MAX_LEN,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("judge_server")
    build_judge_model(root / "model")
    srv = OpenAIServer(
        str(root / "model"), python=VLLM_PYTHON, log_path=root / "server.log", max_model_len=MAX_LEN, kv_cache_gib=1
    )
    srv.start()
    yield srv
    srv.stop()


def judge_cfg(srv: OpenAIServer, **kw) -> dict:
    cfg = {"base_url": srv.base_url, "model": srv.served_model_name, "api_key_file": srv.key_file, "max_tokens": 12}
    return {**cfg, "concurrency": 2, "max_retries": 1, "timeout_s": 60, **kw}


def write_generations(path: Path, responses: list[str], sets: list[str]) -> str:
    n = len(responses)
    prompts = [f"How do I do thing number {i}?" for i in range(n)]
    df = pd.DataFrame({"set": sets, "prompt_id": range(n), "prompt": prompts, "response": responses})
    write_parquet(df, path, metadata={"settings": {"method": path.stem}})
    return str(path)


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_win_rate_stage_end_to_end_and_a_rerun_sends_nothing(server, tmp_path):
    sets = ["harmful"] * 3 + ["task"] * 2
    run = write_generations(tmp_path / "run.parquet", ["Sure.", "Step 1.", "No.", "42", "same"], sets)
    ref = write_generations(tmp_path / "sft.parquet", ["No.", "I cannot.", "Sure.", "41", "same"], sets)
    cfg, out = judge_cfg(server), tmp_path / "win.parquet"
    before = server.request_count()
    run_win_rate(generations=run, reference_generations=ref, judge_cfg=cfg, cache_dir=tmp_path / "cache", out=out)
    assert server.request_count() - before == 2 * 4  # both orders, the identical pair not asked
    df = read_parquet(out)
    assert len(df) == 5 and df.identical.tolist() == [False] * 4 + [True]
    allowed = {"first", "second", "invalid"}  # alpaca_eval_gpt4 has no tie
    assert set(df.verdict_run_first[:4]) <= allowed and set(df.verdict_run_second[:4]) <= allowed
    assert all(isinstance(a, str) for a in df.answer_run_first[:4])
    invalid = (df.verdict_run_first == "invalid") | (df.verdict_run_second == "invalid")
    assert df.score[invalid].isna().all() and df.score[~invalid].notna().all()
    rows = summary_rows(win_rate_file=str(out)).set_index(["metric", "set"])
    for s, n_prompts in (("harmful", 3), ("task", 2)):
        row = rows.loc[("win_rate_vs_sft", s)]
        assert row.n + row.n_invalid == n_prompts
        assert row.n_invalid == int(invalid[df["set"] == s].sum())
    first = digest(out)
    before = server.request_count()
    run_win_rate(generations=run, reference_generations=ref, judge_cfg=cfg, cache_dir=tmp_path / "cache", out=out)
    assert server.request_count() == before  # every answer from the cache
    assert digest(out) == first


def test_rubric_stage_end_to_end_counts_invalid_answers(server, tmp_path):
    gen = write_generations(tmp_path / "run.parquet", ["Sure, step 1.", "No.", "ok", "task"], ["harmful"] * 3 + ["t"])
    cfg, out = judge_cfg(server), tmp_path / "rubrics.parquet"
    before = server.request_count()
    run_rubrics(generations=gen, judge_cfg=cfg, cache_dir=tmp_path / "cache", out=out)
    assert server.request_count() - before == 3 * 2  # hexphi and strongreject on the harmful prompts
    df = read_parquet(out)
    assert df.rubric.value_counts().to_dict() == {"hexphi": 3, "strongreject": 3}
    assert df.score[~df.valid].isna().all() and df.score[df.valid].notna().all()
    assert df.answer.map(type).eq(str).all()
    rows = summary_rows(rubrics_file=str(out)).set_index("metric")
    for rubric in ("hexphi", "strongreject"):
        g = df[df.rubric == rubric]
        assert rows.loc[f"{rubric}_score", "n_invalid"] == int((~g.valid).sum())
        assert rows.loc[f"{rubric}_score", "n"] == int(g.valid.sum())
        if g.valid.sum() == 0:
            assert math.isnan(rows.loc[f"{rubric}_score", "value"])  # nothing valid: no number, not 1 or 0
    before = server.request_count()
    run_rubrics(generations=gen, judge_cfg=cfg, cache_dir=tmp_path / "cache", out=out)
    assert server.request_count() == before


def test_a_server_that_dies_mid_stage_fails_the_stage_and_the_rerun_asks_only_the_rest(server, tmp_path):
    n = 12
    sets = ["harmful"] * n
    run = write_generations(tmp_path / "run.parquet", [f"Sure, step {i}." for i in range(n)], sets)
    ref = write_generations(tmp_path / "sft.parquet", [f"No {i}." for i in range(n)], sets)
    cfg = judge_cfg(server, concurrency=1, max_tokens=24)
    cache, out = tmp_path / "cache", tmp_path / "win.parquet"
    errors: list[BaseException] = []

    def stage():
        try:
            run_win_rate(generations=run, reference_generations=ref, judge_cfg=cfg, cache_dir=cache, out=out)
        except BaseException as e:  # noqa: B036 - handed to the test thread
            errors.append(e)

    def answered() -> int:
        return len(list(cache.glob("*/*.json"))) if cache.exists() else 0

    t = threading.Thread(target=stage)
    t.start()
    deadline = time.time() + 120
    while answered() < 3 and t.is_alive() and time.time() < deadline:
        time.sleep(0.005)
    server.kill()
    t.join(180)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], JudgeUnavailable), errors
    assert "127.0.0.1" in str(errors[0]) and "a rerun asks only the rest" in str(errors[0])
    assert not out.exists()
    done = answered()
    assert 3 <= done < 2 * n

    server.start()  # the same port: the same judge_cfg
    before = server.request_count()  # a fresh server counts from 0
    run_win_rate(generations=run, reference_generations=ref, judge_cfg=cfg, cache_dir=cache, out=out)
    assert server.request_count() - before == 2 * n - done
    resumed = read_parquet(out)

    uninterrupted = tmp_path / "win_uninterrupted.parquet"
    run_win_rate(
        generations=run, reference_generations=ref, judge_cfg=cfg, cache_dir=tmp_path / "c2", out=uninterrupted
    )
    pd.testing.assert_frame_equal(resumed, read_parquet(uninterrupted))
    assert digest(out) == digest(uninterrupted)
