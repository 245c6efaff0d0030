"""Pairwise LLM-judge prompts as published, their parse rules, and the win-rate arithmetic.

Templates (``judge_cfg.pairwise_template``):

* ``alpaca_eval_gpt4`` (default): AlpacaEval's ``alpaca_eval_gpt4`` annotator, the one SEAL (TOSS's evaluation
  base) used. Prompt: ``tatsu-lab/alpaca_eval``, ``src/alpaca_eval/evaluators_configs/alpaca_eval_gpt4/
  alpaca_eval.txt`` (blob 00ae4a9e0c1b08b523343d3b651f12cc3b67afab, unchanged since commit 14230f34 and
  identical at cd543a14, 2025-08-09), byte for byte. Rendering as ``alpaca_eval.utils.make_prompts`` does it:
  each placeholder, in the order they first appear, replaced once with ``str.replace(..., 1)`` (not
  ``str.format``), then the ChatML text split into messages as ``utils.prompt_to_chatml`` does (role from the
  ``<|im_start|>`` line, content stripped). ``configs.yaml``: ``max_tokens: 100``, ``temperature: 0``,
  ``fn_completion_parser: ranking_parser``. Parse (``completion_parsers.ranking_parser``):
  ``ast.literal_eval`` of the answer, the ``rank`` of the entry whose ``model`` is ``model_1``, which must be
  1 or 2; anything else (an exception, another rank) is NaN there and ``invalid`` here. It has no tie.
* ``mtbench_pair_v2``: FastChat's MT-Bench ``pair-v2`` judge (``lm-sys/FastChat``,
  ``fastchat/llm_judge/data/judge_prompts.jsonl``, commit 0e6e7fdc78bf64aceea1508694ce4e6472810b8b): system
  prompt and ``prompt_template.format(question, answer_a, answer_b)``; parse as ``fastchat/llm_judge/common.py``
  ``run_judge_pair``: ``[[A]]`` in the answer -> A, else ``[[B]]`` -> B, else ``[[C]]`` -> tie, else error
  (``invalid`` here); FastChat asks with temperature 0 and ``max_tokens=2048``.

Scoring (AlpacaEval's protocol, asked in both orders as FastChat's pairwise mode does): each prompt is judged
twice, the run's response as the first output (``run_first``) and as the second (``run_second``). Per order a
win is 1, a tie 0.5, a loss 0; the prompt's score is the mean of its two orders. Identical responses (exact
string equality, as ``PairwiseAnnotatorLocal._preprocess`` sets preference 1.5 for ``output_1 == output_2``)
are a tie, 0.5, without asking the judge. A prompt with an ``invalid`` answer in either order is excluded
from the rate and counted (never read as a win, a loss or a tie). The win rate of a set is the mean score of
its valid prompts in %, so a judge that always picks position A gives exactly 50, and the reference run
against itself gives 50. Its 95 % interval is the percentile bootstrap over prompts
(:func:`tokensafe.eval.statistics.stats.prompt_interval`, fixed generator) of the mean per-prompt score.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tokensafe.eval.statistics.stats import prompt_interval

FIRST, SECOND, TIE, INVALID, IDENTICAL = "first", "second", "tie", "invalid", "identical"

# tatsu-lab/alpaca_eval src/alpaca_eval/evaluators_configs/alpaca_eval_gpt4/alpaca_eval.txt, byte for byte
# (no trailing newline; sha256 cf4bace43fa6ac71944b9ca2506587ad7c509478a219e98a3950abf9d5b42a98).
ALPACA_EVAL_GPT4 = (
    "<|im_start|>system\n"
    "You are a helpful assistant, that ranks models by the quality of their answers.\n"
    "<|im_end|>\n"
    "<|im_start|>user\n"
    "I want you to create a leaderboard of different of large-language models. To do so, I will give you the "
    "instructions (prompts) given to the models, and the responses of two models. Please rank the models based "
    "on which responses would be preferred by humans. All inputs and outputs should be python dictionaries.\n"
    "\n"
    "Here is the prompt:\n"
    "{\n"
    '    "instruction": """{instruction}""",\n'
    "}\n"
    "\n"
    "Here are the outputs of the models:\n"
    "[\n"
    "    {\n"
    '        "model": "model_1",\n'
    '        "answer": """{output_1}"""\n'
    "    },\n"
    "    {\n"
    '        "model": "model_2",\n'
    '        "answer": """{output_2}"""\n'
    "    }\n"
    "]\n"
    "\n"
    "Now please rank the models by the quality of their answers, so that the model with rank 1 has the best "
    "output. Then return a list of the model names and ranks, i.e., produce the following output:\n"
    "[\n"
    "    {'model': <model-name>, 'rank': <model-rank>},\n"
    "    {'model': <model-name>, 'rank': <model-rank>}\n"
    "]\n"
    "\n"
    "Your response must be a valid Python dictionary and should contain nothing else because we will directly "
    "execute it in Python. Please provide the ranking that the majority of humans would give.\n"
    "<|im_end|>"
)

# lm-sys/FastChat fastchat/llm_judge/data/judge_prompts.jsonl, entry "pair-v2": system_prompt and prompt_template.
PAIR_V2_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to "
    "the user question displayed below. You should choose the assistant that follows the user's instructions and "
    "answers the user's question better. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of their responses. Begin your evaluation by "
    "comparing the two responses and provide a short explanation. Avoid any positional biases and ensure that "
    "the order in which the responses were presented does not influence your decision. Do not allow the length "
    "of the responses to influence your evaluation. Do not favor certain names of the assistants. Be as "
    "objective as possible. After providing your explanation, output your final verdict by strictly following "
    'this format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)

PAIR_V2_TEMPLATE = (
    "[User Question]\n"
    "{question}\n"
    "\n"
    "[The Start of Assistant A's Answer]\n"
    "{answer_a}\n"
    "[The End of Assistant A's Answer]\n"
    "\n"
    "[The Start of Assistant B's Answer]\n"
    "{answer_b}\n"
    "[The End of Assistant B's Answer]"
)


def _alpaca_render(instruction: str, output_1: str, output_2: str) -> list[dict]:
    """``utils.make_prompts`` (batch size 1) then ``utils.prompt_to_chatml``."""
    prompt = ALPACA_EVAL_GPT4
    values = {"instruction": instruction, "output_1": output_1, "output_2": output_2}
    for name in dict.fromkeys(re.findall(r"{([^ \s]+?)}", ALPACA_EVAL_GPT4)):
        prompt = prompt.replace("{" + name + "}", str(values[name]), 1)
    messages = []
    for part in prompt.strip().split("<|im_start|>")[1:]:
        head, body = part.split("\n", 1)
        messages.append({"role": head.strip(), "content": body.split("<|im_end|>", 1)[0].strip()})
    return messages


def _alpaca_parse(answer: str) -> str:
    """``completion_parsers.ranking_parser``: rank 1 of ``model_1`` -> first, rank 2 -> second."""
    if answer == "":
        return INVALID
    try:
        rank = [c for c in ast.literal_eval(answer) if c["model"] == "model_1"][0]["rank"]
        if rank in [1, 2]:
            return FIRST if rank == 1 else SECOND
    except Exception:  # the published parser turns every failure into NaN
        pass
    return INVALID


def _pair_v2_render(instruction: str, output_1: str, output_2: str) -> list[dict]:
    user = PAIR_V2_TEMPLATE.format(question=instruction, answer_a=output_1, answer_b=output_2)
    return [{"role": "system", "content": PAIR_V2_SYSTEM}, {"role": "user", "content": user}]


def _pair_v2_parse(answer: str) -> str:
    if "[[A]]" in answer:
        return FIRST
    if "[[B]]" in answer:
        return SECOND
    if "[[C]]" in answer:
        return TIE
    return INVALID


@dataclass(frozen=True)
class PairwiseTemplate:
    name: str
    render: Callable[[str, str, str], list[dict]]  # (instruction, output_1, output_2) -> chat messages
    parse: Callable[[str], str]  # answer -> first | second | tie | invalid
    max_tokens: int  # the published request's max_tokens


TEMPLATES = {
    "alpaca_eval_gpt4": PairwiseTemplate("alpaca_eval_gpt4", _alpaca_render, _alpaca_parse, 100),
    "mtbench_pair_v2": PairwiseTemplate("mtbench_pair_v2", _pair_v2_render, _pair_v2_parse, 2048),
}


def get_template(name: str) -> PairwiseTemplate:
    if name not in TEMPLATES:
        raise ValueError(f"unknown pairwise template {name!r} (known: {', '.join(TEMPLATES)})")
    return TEMPLATES[name]


def order_score(verdict: str, run_position: str) -> float:
    """One order's score for the run shown at ``run_position`` (first | second): 1 win, 0.5 tie, 0 loss;
    NaN for an invalid answer."""
    if verdict in (TIE, IDENTICAL):
        return 0.5
    if verdict == INVALID:
        return math.nan
    if verdict not in (FIRST, SECOND):
        raise ValueError(f"unknown verdict {verdict!r}")
    return 1.0 if verdict == run_position else 0.0


def prompt_score(verdict_run_first: str, verdict_run_second: str) -> float:
    """Mean of the two orders (NaN when either is invalid)."""
    a, b = order_score(verdict_run_first, FIRST), order_score(verdict_run_second, SECOND)
    return math.nan if math.isnan(a) or math.isnan(b) else (a + b) / 2


def win_rate(scores, identical=None) -> dict:
    """Win rate in % over the valid per-prompt ``scores`` (NaN = invalid), with n (valid prompts), n_invalid,
    n_identical and the bootstrap 95 % interval (NaN when no prompt is valid)."""
    s = np.asarray(scores, dtype=float)
    valid = s[~np.isnan(s)]
    out = {
        "n": int(valid.size),
        "n_invalid": int(np.isnan(s).sum()),
        "n_identical": int(np.asarray(identical, dtype=bool).sum()) if identical is not None else 0,
    }
    if valid.size == 0:
        return {"win_rate": math.nan, "ci_low": math.nan, "ci_high": math.nan, **out}
    low, high = prompt_interval(valid[None, :])
    return {"win_rate": 100 * float(valid.mean()), "ci_low": 100 * low, "ci_high": 100 * high, **out}
