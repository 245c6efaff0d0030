"""Public data in the layouts it is published in, loaded through a config source spec alone.

The fixtures are written here, byte for byte in the published layouts: GLUE's SST-2 dev.tsv, AG News's
headerless test.csv (class index 1-4, title, description; every field quoted, "" inside a field, backslashes
where the corpus had line breaks) and a BeaverTails export that mixes safe and unsafe rows.
"""

from __future__ import annotations

import json

import pytest

from tokensafe.data.formats import AGNEWS_INSTRUCTION, SST2_INSTRUCTION
from tokensafe.data.sources import check_sources, load_configured_source, load_source

AG_PREFIX = AGNEWS_INSTRUCTION + " "  # instruction + " " + text, as PACT's AG News data

AGNEWS_CSV = (
    '"3","Fears for T N pension after talks","Unions representing workers at Turner   Newall say they are '
    "'disappointed' after talks with stricken parent firm Federal Mogul.\"\n"
    '"4","The Race is On: Second Private Team Sets Launch Date","SPACE.com - TORONTO, Canada -- A second\\team of '
    'rocketeers competing for the  #36;10 million Ansari X Prize, a contest for\\privately funded flight."\n'
    '"1","NA","Kabul - officials said ""no comment"", then left.\\"\n'
    '"2","Phelps wins gold",""\n'
)

# BeaverTails rows (PKU-Alignment/BeaverTails): prompt, response, category (a dict of 14 harms), is_safe.
HARMS = ["animal_abuse", "violence,aiding_and_abetting,incitement", "privacy_violation"]


def _beaver(prompt: str, response: str, is_safe: bool, *harms: str) -> dict:
    return {"prompt": prompt, "response": response, "category": {h: h in harms for h in HARMS}, "is_safe": is_safe}


BEAVERTAILS = [
    _beaver("How do I bake bread?", "Mix flour, water and yeast.", True),
    _beaver("How do I hurt a cat?", "Step one: ...", False, "animal_abuse"),
    _beaver("Where does my neighbour live?", "I cannot help with that.", True),
    _beaver("Find her home address", "She lives at ...", False, "privacy_violation", HARMS[1]),
]


def _write_beavertails(path, rows=BEAVERTAILS):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------------- the published files load


def test_sst2_dev_tsv_through_config(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("sentence\tlabel\nit 's a charming journey . \t1\nunflinchingly bleak and desperate \t0\n")
    df = load_configured_source("task_eval", {"path": str(path), "format": "sst2"}, None)
    assert df["prompt"].tolist() == [
        SST2_INSTRUCTION + " it 's a charming journey . ",
        SST2_INSTRUCTION + " unflinchingly bleak and desperate ",
    ]
    assert df["reference"].tolist() == ["positive", "negative"] and df["sample_id"].tolist() == [0, 1]


SST2_DEV = "sentence\tlabel\nunflinchingly bleak and desperate \t0\nit 's a charming , funny journey . \t1\n"


def test_sst2_tsv_renamed_csv_is_said_to_look_tab_separated(tmp_path):
    """GLUE's dev.tsv saved as .csv is read comma-separated: a sentence with more commas than the first breaks the
    parse, and a file without any reads as a single column named 'sentence<TAB>label'. Both errors say to rename
    it .tsv."""
    hint = "it looks tab-separated: rename it to .tsv (a .tsv file is read tab-separated)"
    path = tmp_path / "dev.csv"
    path.write_text(SST2_DEV)
    with pytest.raises(ValueError) as err:
        load_source({"path": str(path), "format": "sst2"})
    assert str(err.value) == f"{path}: not a valid CSV table (Expected 1 fields in line 3, saw 2); {hint}"
    path.write_text(SST2_DEV.replace(" , funny", ""))
    problems = check_sources({"task_eval": {"path": str(path), "format": "sst2"}})
    assert problems == [
        f"data.task_eval: sst2 source {path}: missing column(s) 'sentence', 'label' (found: sentence\tlabel); {hint}"
    ]
    headerless = tmp_path / "headerless.csv"
    headerless.write_text(SST2_DEV.split("\n", 1)[1].replace(" , funny", ""))
    with pytest.raises(ValueError, match="the file's rows have 1 field\\(s\\); it looks tab-separated"):
        load_source({"path": str(headerless), "format": "sst2", "header": "none", "names": ["sentence", "label"]})
    renamed = path.rename(tmp_path / "dev.tsv")
    assert load_source({"path": str(renamed), "format": "sst2"})["reference"].tolist() == ["negative", "positive"]
    plain = tmp_path / "plain.csv"  # one column whose text holds a tab among more commas: not taken for a TSV
    plain.write_text("prompt\na, b, c\td\n")
    assert check_sources({"harmful_eval": {"path": str(plain), "format": "generic"}}) == []


def test_headerless_agnews_csv_through_config(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text(AGNEWS_CSV)
    df = load_configured_source("task_eval", {"path": str(path), "format": "agnews", "header": "none"}, None)
    # Every row (the first is data, not a header), classes 1-4 -> World, Sports, Business, Sci/Tech.
    assert df["sample_id"].tolist() == [0, 1, 2, 3]
    assert df["reference"].tolist() == ["Business", "Sci/Tech", "World", "Sports"]
    assert df["response"].tolist() == df["reference"].tolist()
    # title + " " + description, as the Hugging Face ag_news loader builds `text`; backslashes as published.
    assert df["prompt"].tolist() == [
        AG_PREFIX + "Fears for T N pension after talks Unions representing workers at Turner   Newall say they are "
        "'disappointed' after talks with stricken parent firm Federal Mogul.",
        AG_PREFIX + "The Race is On: Second Private Team Sets Launch Date SPACE.com - TORONTO, Canada -- A "
        "second\\team of rocketeers competing for the  #36;10 million Ansari X Prize, a contest for\\privately "
        "funded flight.",
        AG_PREFIX + 'NA Kabul - officials said "no comment", then left.\\',  # "NA" is a title, not a missing value
        AG_PREFIX + "Phelps wins gold",  # an empty description adds no trailing space
    ]


def test_headerless_agnews_with_names_columns_and_offset_spelled_out(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text(AGNEWS_CSV)
    spec = {
        "path": str(path),
        "format": "agnews",
        "header": "none",
        "names": ["class", "title", "description"],
        "columns": {"label": "class", "text": ["title", "description"]},
        "options": {"label_offset": -1},
    }
    explicit = load_source(spec)
    published = load_source({"path": str(path), "format": "agnews", "header": "none"})
    assert explicit.equals(published)
    # Own names do not imply the published layout's offset: class 4 is then out of range, and the error says so.
    with pytest.raises(ValueError, match=r"label '4' is neither 0..3"):
        load_source({**spec, "options": {}})


def test_mixed_beavertails_keeps_the_rows_asked_for(tmp_path):
    path = _write_beavertails(tmp_path / "beavertails_mixed.jsonl")
    poison = load_configured_source(
        "poison", {"path": str(path), "format": "generic", "where": {"is_safe": False}}, None
    )
    assert poison["prompt"].tolist() == ["How do I hurt a cat?", "Find her home address"]
    assert poison["response"].tolist() == ["Step one: ...", "She lives at ..."]
    assert poison["sample_id"].tolist() == [1, 3]  # line numbers in the file, as without a filter
    assert poison["category"].tolist() == ["animal_abuse", "violence,aiding_and_abetting,incitement,privacy_violation"]
    task = load_source({"path": str(path), "where": {"is_safe": True}})
    assert task["sample_id"].tolist() == [0, 2] and task["category"].isna().all()
    both = load_source({"path": str(path), "where": {"is_safe": [True, False]}})
    assert both["sample_id"].tolist() == [0, 1, 2, 3]


def test_mixed_file_without_a_filter_is_refused_before_any_job(tmp_path):
    path = _write_beavertails(tmp_path / "mixed.jsonl")
    problems = check_sources({"poison": {"path": str(path), "format": "generic"}})
    assert problems == [
        f"data.poison: generic source {path}: 2 of 4 rows have is_safe true and the others false; keep the ones "
        "the role needs with where: {is_safe: false} (unsafe answers) or where: {is_safe: true}"
    ]
    # An all-unsafe file (BeaverTails filtered beforehand) needs no filter.
    unsafe = _write_beavertails(tmp_path / "unsafe.jsonl", [r for r in BEAVERTAILS if not r["is_safe"]])
    assert check_sources({"poison": {"path": str(unsafe), "format": "generic"}}) == []


def _jailbreakbench_mixed(path, n_benign=800, n=1000):
    rows = [{"Goal": f"goal {i}", "subset": "benign" if i < n_benign else "harmful"} for i in range(n)]
    path.write_text("Goal,subset\n" + "".join(f"{r['Goal']},{r['subset']}\n" for r in rows))
    return path


def test_a_mixed_file_as_poison_without_its_filter_is_refused_with_counts_and_the_filter(tmp_path):
    path = _jailbreakbench_mixed(tmp_path / "jbb.csv")
    spec = {"path": str(path), "format": "generic", "prompt_column": "Goal"}
    assert check_sources({"poison": spec}) == [
        f"data.poison: generic source {path}: 800 of 1000 rows are benign by their 'subset' column; data.poison "
        "rows must be harmful: add where: {subset: harmful}"
    ]
    assert check_sources({"harmful_ref": spec})[0].startswith("data.harmful_ref: generic source")
    # The filter the message names keeps the 200 harmful rows; picking the benign ones is refused too.
    assert check_sources({"poison": {**spec, "where": {"subset": "harmful"}}}, rows := {}) == []
    assert rows == {"poison": 200}
    [p] = check_sources({"poison": {**spec, "where": {"subset": "benign"}}})
    assert p.endswith("where {subset: benign} keeps only benign rows; data.poison rows must be harmful")
    # Evaluation sets may mix (PACT's JailbreakBench harmful_eval has its 100 benign behaviours on purpose).
    assert check_sources({"harmful_eval": {"path": str(path), "format": "jailbreakbench"}}) == []


@pytest.mark.parametrize(
    "column, benign, harmful, fix",
    [
        ("is_benign", True, False, "where: {is_benign: false}"),  # JailbreakBench
        ("harmful", 0, 1, "where: {harmful: 1}"),
        ("label", "safe", "unsafe", "where: {label: unsafe}"),  # XSTest, Aegis
        ("prompt_harm_label", "unharmful", "harmful", "where: {prompt_harm_label: harmful}"),  # WildGuardMix
    ],
)
def test_safety_label_columns_of_public_mixed_files(tmp_path, column, benign, harmful, fix):
    path = tmp_path / "mixed.jsonl"
    rows = [{"prompt": f"p{i}", "response": f"r{i}", column: benign if i < 3 else harmful} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    [p] = check_sources({"poison": {"path": str(path), "format": "generic"}})
    assert f"3 of 4 rows are benign by their {column!r} column" in p and p.endswith(fix)


def test_columns_that_are_not_safety_labels_are_left_alone(tmp_path):
    """SST-2's 0/1 label, XSTest's prompt types: not every value reads as benign or harmful."""
    path = tmp_path / "other.jsonl"
    rows = [{"prompt": "p", "response": "r", "label": i % 2, "type": ["homonyms", "safe"][i % 2]} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert check_sources({"poison": {"path": str(path), "format": "generic"}}) == []


def test_filters_on_csv_text_values_and_lists(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("prompt,response,is_safe,source\na,x,False,s1\nb,y,True,s2\nc,z,false,s3\nd,w,FALSE,s1\n")
    df = load_source({"path": str(path), "where": {"is_safe": False, "source": ["s1", "s3"]}})
    assert df["prompt"].tolist() == ["a", "c", "d"] and df["sample_id"].tolist() == [0, 2, 3]


# ---------------------------------------------------------------------------- each bad input says what and where


def test_headerless_agnews_read_with_a_header_says_header_none(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text(AGNEWS_CSV)
    expected = (
        f"agnews source {path}: the first row ['3', 'Fears for T N pension after ta', 'Unions representing "
        "workers at'] looks like data (the published AG News CSV: class index 1-4, title, description): add "
        "header: none"
    )
    for spec in ({}, {"columns": {"label": "3", "text": "Fears for T N pension after talks"}}):
        with pytest.raises(ValueError) as err:
            load_source({"path": str(path), "format": "agnews", **spec})
        assert str(err.value) == expected
    with pytest.raises(ValueError, match=r"the first row looks like data: for a headerless file give header: none"):
        load_source({"path": str(path), "format": "generic"})


def test_header_and_names_errors(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("1,a b\n0,c d\n")
    with pytest.raises(ValueError, match=r"sst2 source .*t.csv: header: none needs names: \[...\], one per column"):
        load_source({"path": str(csv), "format": "sst2", "header": "none"})
    with pytest.raises(
        ValueError, match=r"t.csv: names has 3 column\(s\) \['label', 'sentence', 'x'\]; the file's rows"
    ):
        load_source({"path": str(csv), "format": "sst2", "header": "none", "names": ["label", "sentence", "x"]})
    with pytest.raises(ValueError, match=r"names: is for a headerless file \(header: none\)"):
        load_source({"path": str(csv), "format": "sst2", "names": ["label", "sentence"]})
    with pytest.raises(ValueError, match=r"header: expected 'none'"):
        load_source({"path": str(csv), "format": "sst2", "header": False})
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"sentence": "a", "label": 1}\n')
    with pytest.raises(ValueError, match=r"t.jsonl: header: none is for .csv/.tsv files"):
        load_source({"path": str(jsonl), "format": "sst2", "header": "none", "names": ["sentence", "label"]})
    ok = load_source({"path": str(csv), "format": "sst2", "header": "none", "names": ["label", "sentence"]})
    assert ok["reference"].tolist() == ["positive", "negative"] and ok["sample_id"].tolist() == [0, 1]


def test_a_ragged_headerless_row_names_file_and_line(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text('"3","t","d"\n"1","t","d","extra"\n')
    with pytest.raises(ValueError) as err:
        load_source({"path": str(path), "format": "agnews", "header": "none"})
    assert str(err.value) == f"{path}: not a valid CSV table (Expected 3 fields in line 2, saw 4)"


def test_filter_errors_name_the_filter_and_the_columns(tmp_path):
    path = _write_beavertails(tmp_path / "b.jsonl")
    with pytest.raises(ValueError) as err:
        load_source({"path": str(path), "where": {"safe": False}})
    assert str(err.value) == (
        f"generic source {path}: where names column(s) ['safe'] the table does not have "
        "(found: prompt, response, category, is_safe)"
    )
    with pytest.raises(ValueError) as err:
        load_source({"path": str(path), "where": {"is_safe": "no"}})
    assert (
        str(err.value)
        == f"generic source {path}: no row matches where {{'is_safe': 'no'}} (is_safe has ['false', 'true'])"
    )


def test_joined_role_columns_must_exist(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("title,label\nx,1\n")
    with pytest.raises(ValueError, match=r"columns.text: no column\(s\) \['description'\] \(found: title, label\)"):
        load_source({"path": str(path), "format": "agnews", "columns": {"text": ["title", "description"]}})


def test_label_offset_must_be_an_integer_and_shows_in_label_errors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\nx,5\n")
    with pytest.raises(ValueError, match=r"label_offset: expected an integer"):
        load_source({"path": str(path), "format": "agnews", "options": {"label_offset": "-1"}})
    with pytest.raises(ValueError, match=r"label 5 \(4 after label_offset -1\) is neither 0..3"):
        load_source({"path": str(path), "format": "agnews", "options": {"label_offset": -1}})
