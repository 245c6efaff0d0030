"""Answer extraction and utility accuracy."""

from __future__ import annotations

import pytest

from tokensafe.eval.utility.answers import (
    AGNEWS_LABELS,
    SST2_LABELS,
    accuracy,
    answers_match,
    extract_label,
    extract_number,
    gsm8k_reference,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She makes 9 * 2 = $18 every day.\n#### 18", "18"),
        ("Total: 3 + 4.\nThe answer is $1,234.50.", "1234.50"),
        ("The answer is 42. Then 7 more apples appear.", "42"),  # marker beats the last number
        ("The answer is 10. Wait, the answer is 12.", "12"),  # the last marker wins
        ("the ANSWER is: -3", "-3"),
        ("#### 1,000", "1000"),
        ("I think 3, no, 5", "5"),  # no marker: last number
        ("The answer is unclear; 4 or 6?", "4"),  # first number after the marker
        ("it costs +7 dollars", "7"),
        ("no digits at all", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_gsm8k_reference():
    answer = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
    assert gsm8k_reference(answer) == "72"
    assert gsm8k_reference("x\n#### 1,250 ") == "1250"
    with pytest.raises(ValueError, match="####"):
        gsm8k_reference("no marker 72")
    with pytest.raises(ValueError, match="nothing after"):
        gsm8k_reference("x ####  ")


@pytest.mark.parametrize(
    "text, labels, expected",
    [
        ("The sentiment is Positive.", SST2_LABELS, "positive"),
        ("negative? no wait, positive", SST2_LABELS, "negative"),  # earliest occurrence
        ("positively glowing", SST2_LABELS, None),  # whole words only
        ("This is a sci/tech story.", AGNEWS_LABELS, "Sci/Tech"),
        ("Worldwide sports news", AGNEWS_LABELS, "Sports"),  # "World" inside "Worldwide" does not count
        ("Category: Business", AGNEWS_LABELS, "Business"),
        ("nothing relevant", AGNEWS_LABELS, None),
        ("", SST2_LABELS, None),
        ("Sci/Tech", ["Sci", "Sci/Tech"], "Sci/Tech"),  # same start: the longer label
    ],
)
def test_extract_label(text, labels, expected):
    assert extract_label(text, labels) == expected


def test_extract_label_needs_labels():
    with pytest.raises(ValueError, match="at least one label"):
        extract_label("x", [])


def test_answers_match_rules():
    assert answers_match("7.0", "7") and answers_match("$1,000", "1000") and answers_match("-0.50", "-0.5")
    assert answers_match("ABC.", "abc") and answers_match("  Sci/Tech ", "sci/tech")
    assert not answers_match(None, "1") and not answers_match("8", "9") and not answers_match("7 apples", "7")


def test_accuracy_hand_counted():
    preds = ["7.0", "8", "abc", None]
    refs = ["7", "9", "ABC.", "1"]
    # matches: 7.0 == 7 (numeric), "abc" == "ABC." (text); 8 != 9; None is wrong -> 2 / 4
    assert accuracy(preds, refs) == 0.5
    assert accuracy(["positive"], ["positive"]) == 1.0


def test_accuracy_bad_inputs():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        accuracy(["1", "2"], ["1"])
    with pytest.raises(ValueError, match="at least one reference"):
        accuracy([], [])
    with pytest.raises(ValueError, match="positions \\[1\\]"):
        accuracy(["1", "2"], ["1", None])
