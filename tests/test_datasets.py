"""Dataset readers and shapes: every file type and every row shape, plus real HH-RLHF."""
from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from embrm.errors import EmbrmError
from embrm.extractor.datasets import Columns, DatasetSpec, dataset_kind, iter_rows
from embrm.extractor.shapes import split_hh

from conftest import HH_RLHF

RECS = [
    {"prompt": "p0", "responses": ["a", "b", "c"], "rewards": [0.1, 0.5, -1.0]},
    {"prompt": "p1", "responses": ["d", "e", "f"], "rewards": [1.0, 2.0, 3.0]},
]


def _rows(path, **kw):
    return list(iter_rows(DatasetSpec(str(path), **kw)))


def test_every_file_type_reads_the_same_rows(tmp_path):
    jl = tmp_path / "d.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in RECS))
    gz = tmp_path / "d.jsonl.gz"
    gz.write_bytes(gzip.compress(jl.read_bytes()))
    js = tmp_path / "d.json"
    js.write_text(json.dumps(RECS))
    table = pa.Table.from_pylist(RECS)
    pq.write_table(table, tmp_path / "d.parquet")
    csv_t = pa.table({"prompt": ["p0", "p1"], "responses": [json.dumps(r["responses"]) for r in RECS],
                      "rewards": [json.dumps(r["rewards"]) for r in RECS]})
    pcsv.write_csv(csv_t, tmp_path / "d.csv")
    import datasets

    datasets.Dataset.from_list(RECS).save_to_disk(str(tmp_path / "saved"))
    want = _rows(jl)
    assert len(want) == 6 and want[2] == {"prompt": "p0", "response": "c", "prompt_id": 0, "response_index": 2,
                                          "role": "", "label": None, "reward": -1.0}
    for p in (gz, js, tmp_path / "d.parquet", tmp_path / "d.csv", tmp_path / "saved"):
        assert _rows(p) == want, p.name
    assert len(_rows(jl, limit=1)) == 3
    assert dataset_kind(DatasetSpec(str(jl))) == "multi"


def test_shapes_and_column_mapping(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"q": "hi", "good": "yes", "bad": "no"}) + "\n")
    rows = _rows(p, columns=Columns(prompt="q", chosen="good", rejected="bad"))
    assert [(r["response"], r["role"], r["label"]) for r in rows] == [("yes", "chosen", 1.0), ("no", "rejected", 0.0)]
    p.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "a", "response": "x", "reward": 2}, {"prompt": "b", "response": "y", "label": 1},
        {"prompt": "a", "response": "z", "reward": None}]))
    rows = _rows(p)
    assert [(r["prompt_id"], r["response_index"], r["reward"], r["label"]) for r in rows] == [
        (0, 0, 2.0, None), (1, 0, None, 1.0), (0, 1, None, None)]
    p.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "same", "chosen": "a", "rejected": "b"}, {"prompt": "other", "chosen": "c", "rejected": "d"},
        {"prompt": "same", "chosen": "e", "rejected": "f"}]))
    rows = _rows(p)  # a repeated prompt keeps its id; its pairs number on: 2m, 2m + 1
    assert [(r["prompt_id"], r["response_index"], r["role"]) for r in rows] == [
        (0, 0, "chosen"), (0, 1, "rejected"), (1, 0, "chosen"), (1, 1, "rejected"), (0, 2, "chosen"),
        (0, 3, "rejected")]
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"}, {"role": "assistant", "content": "ciao"}]
    p.write_text(json.dumps({"messages": msgs[:2]}) + "\n" + json.dumps({"messages": msgs}) + "\n")
    rows = _rows(p)
    assert rows[0]["prompt"] == "hi" and rows[0]["response"] == "hello"
    assert json.loads(rows[1]["prompt"]) == msgs[:3] and rows[1]["response"] == "ciao"


def test_hh_transcripts_split_at_the_last_shared_assistant_turn():
    c = "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: How are you?\n\nAssistant: Fine, thanks."
    r = "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: How are you?\n\nAssistant: Go away."
    p, a, b = split_hh(c, r)
    assert p.endswith("How are you?\n\nAssistant:") and a == " Fine, thanks." and b == " Go away."
    assert p + a == c and p + b == r
    # responses that share their first words still split at the turn, not mid-reply
    p2, a2, b2 = split_hh(c.replace("Fine", "I am fine"), r.replace("Go away", "I am not"))
    assert p2 == p and a2.startswith(" I am fine") and b2 == " I am not."
    with pytest.raises(EmbrmError, match="no shared"):
        split_hh("abc", "abd")


def test_bad_records_give_one_clear_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\nnot json\n')
    with pytest.raises(EmbrmError, match="line 2 is not valid JSON"):
        _rows(p)
    p.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c"}\n')
    with pytest.raises(EmbrmError, match="record 1 has no column 'response'"):
        _rows(p)
    p.write_text('{"prompt": "a", "responses": ["x", "y"], "rewards": [1]}\n')
    with pytest.raises(EmbrmError, match="one reward per response"):
        _rows(p)
    pair = {"prompt_a": "p", "response_a": "x", "prompt_b": "q", "response_b": "y"}
    for recs, msg in [([pair], "a two-prompt pair file needs a 'winner' column"),
                      ([{**pair, "winner": "c" * 10_000}], "record 0: winner must be 'a' or 'b', got 'ccc"),
                      ([{**pair, "winner": None}], "record 0: winner must be 'a' or 'b', got None"),
                      ([{**pair, "winner": "a"}, {**pair, "winner": "b", "response_b": 3}],
                       "record 1: response_b must be text, got int"),
                      ([{**pair, "winner": "a"}, {"prompt_a": "p", "response_a": "x", "winner": "a"}],
                       "record 1 has no column 'prompt_b'")]:
        p.write_text("".join(json.dumps(r) + "\n" for r in recs))
        with pytest.raises(EmbrmError, match=msg) as e:
            _rows(p)
        assert "\n" not in str(e.value) and len(str(e.value)) < 400
    p.write_text(json.dumps({**pair, "winner": ""}) + "\n" + json.dumps({**pair, "winner": " B "}) + "\n")
    stats: dict[str, int] = {}  # an unlabelled pair is skipped whole
    rows = list(iter_rows(DatasetSpec(str(p), skip_bad_rows=True), stats))
    assert stats["skipped"] == 1 and [(r["prompt"], r["response"], r["role"]) for r in rows] == [
        ("q", "y", "chosen"), ("p", "x", "rejected")]
    assert rows[0]["prompt_id"] != rows[1]["prompt_id"]  # a prompt id each
    with pytest.raises(EmbrmError, match="cannot read d.txt"):
        (tmp_path / "d.txt").write_text("x")
        _rows(tmp_path / "d.txt")


@pytest.mark.skipif(not HH_RLHF.exists(), reason="../shared/data/hh-rlhf is absent")
def test_real_hh_rlhf_pairs_parse():
    rows = _rows(HH_RLHF)  # every pair, the 4 with an empty reply included
    assert len(rows) == 2 * 2312
    assert sum(not r["response"].strip() for r in rows) == 4  # a lone space after "Assistant:"
    assert all(r["prompt"].endswith("\n\nAssistant:") for r in rows)
    assert rows[0]["prompt"] == rows[1]["prompt"] and rows[0]["prompt_id"] == rows[1]["prompt_id"] == 0
    # prompt ids follow the prompt text: records 250 and 1483 both ask "what are racist words"
    assert rows[2 * 250]["prompt"] == rows[2 * 1483]["prompt"]
    assert rows[2 * 250]["prompt_id"] == rows[2 * 1483]["prompt_id"]
    by_prompt: dict[str, set[int]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt"], set()).add(r["prompt_id"])
    assert all(len(ids) == 1 for ids in by_prompt.values())
    assert len({r["prompt_id"] for r in rows}) == len(by_prompt) < 2312
