"""Readers of user files: every format gives (line, record), and every failure names the file and line."""

from __future__ import annotations

import gzip
import json
import pickle
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmbert.data.records import (
    BadInputError,
    iter_csv,
    iter_jsonl,
    iter_lines,
    iter_parquet,
    read_json,
    read_text,
)
from mmbert.errors import MmbertError


def test_jsonl_and_gzip(tmp_path):
    lines = '{"text": "a"}\n\n   \n[1, 2]\n{"text": "ü"}\n'
    (tmp_path / "a.jsonl").write_text(lines, encoding="utf-8")
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(lines)
    expected = [(1, {"text": "a"}), (4, [1, 2]), (5, {"text": "ü"})]  # blank lines skipped, numbers kept
    assert list(iter_jsonl(tmp_path / "a.jsonl")) == expected
    assert list(iter_jsonl(tmp_path / "a.jsonl.gz")) == expected


def test_jsonl_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n{"text": broken\n{"text": "last"}\n')
    with pytest.raises(BadInputError, match=rf"{bad}:2: invalid UTF-8: column 14"):
        list(iter_jsonl(bad))
    errors: list[BadInputError] = []
    assert list(iter_jsonl(bad, errors.append)) == [(1, {"text": "ok"}), (4, {"text": "last"})]
    assert [(e.reason, e.line) for e in errors] == [("invalid UTF-8", 2), ("broken JSON line", 3)]
    assert str(errors[1]).startswith(f"{bad}:3: broken JSON line: ")
    truncated = tmp_path / "t.jsonl.gz"
    truncated.write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:50])
    errors.clear()
    list(iter_jsonl(truncated, errors.append))
    assert [(e.reason, e.line) for e in errors] == [("unreadable file", None)]


def test_text_lines_and_whole_files(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("one\r\ntwo \u2028 still two\n\nfour".encode())
    assert list(iter_lines(path)) == [(1, "one"), (2, "two \u2028 still two"), (3, ""), (4, "four")]
    assert read_text(path) == "one\r\ntwo \u2028 still two\n\nfour"
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nna\xefve\n")
    with pytest.raises(BadInputError, match=rf"{bad}:2: invalid UTF-8: column 3"):
        list(iter_lines(bad))
    with pytest.raises(BadInputError, match=rf"{bad}:2: invalid UTF-8: byte offset 7"):
        read_text(bad)


def test_csv_tsv_and_json(tmp_path):
    csv_path = tmp_path / "a.csv"
    csv_path.write_text('text,label\nhello,1\n"two\nlines",0\n', encoding="utf-8")
    assert list(iter_csv(csv_path)) == [
        (2, {"text": "hello", "label": "1"}),
        (3, {"text": "two\nlines", "label": "0"}),  # a row is numbered by the line where it starts
    ]
    tsv_path = tmp_path / "a.tsv"
    tsv_path.write_text("text\tlabel\na, b\tx\n", encoding="utf-8")
    assert list(iter_csv(tsv_path, delimiter="\t")) == [(2, {"text": "a, b", "label": "x"})]
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_bytes(b"text,label\nok,1\nn\xe9,2\n")
    with pytest.raises(BadInputError, match=rf"{bad_csv}:3: invalid UTF-8"):
        list(iter_csv(bad_csv))
    json_path = tmp_path / "a.json"
    json_path.write_text(json.dumps({"data": [{"text": "x"}]}), encoding="utf-8")
    assert read_json(json_path) == {"data": [{"text": "x"}]}
    json_path.write_text('[\n  {"text": "x"},\n  {"text": }\n]', encoding="utf-8")
    with pytest.raises(BadInputError, match=rf"{json_path}:3: invalid JSON: Expecting value"):
        read_json(json_path)


@pytest.mark.parametrize(
    "text, error",
    [
        ("text,label\na,pos\nsample text 3, with a comma,pos\n", ":3: 3 fields where the header has 2"),
        ("text,label,label\na,pos,neg\n", ":1: duplicate column name: 'label' is given twice"),
        ('text,label\na,pos\n"b,neg\nc,pos\nd,neg\n', ":3: unbalanced quote"),
        ('text,label\n"a"b,pos\n', ":2: broken CSV"),
        ('text,label\n"a,pos\nb",neg,x\n', ":2: 3 fields where the header has 2: .* runs to line 3"),
    ],
    ids=[
        "unquoted-comma",
        "duplicate-header",
        "unbalanced-quote-where-it-opens",
        "text-after-quote",
        "spans",
    ],
)
def test_csv_never_guesses_a_row_it_cannot_read(tmp_path, text, error):
    """A row that the header does not describe is an error at its line, not a shifted label."""
    path = tmp_path / "rows.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BadInputError, match=re.escape(str(path)) + error):
        list(iter_csv(path))


def test_readers_drop_a_byte_order_mark(tmp_path):
    """Excel's "CSV UTF-8" and Notepad start a file with a BOM; the first column keeps its name."""
    csv_path = tmp_path / "excel.csv"
    csv_path.write_bytes("text,label\nhello,pos\n".encode("utf-8-sig"))
    assert list(iter_csv(csv_path)) == [(2, {"text": "hello", "label": "pos"})]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes('{"text": "x"}\n'.encode("utf-8-sig"))
    assert list(iter_jsonl(jsonl)) == [(1, {"text": "x"})]
    txt = tmp_path / "a.txt"
    txt.write_bytes("one\ntwo\n".encode("utf-8-sig"))
    assert list(iter_lines(txt)) == [(1, "one"), (2, "two")]
    assert read_text(txt) == "one\ntwo\n"


def test_parquet(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(
        pa.table({"text": ["a", "b", "c"], "lang": ["fra", "deu", "ell"], "other": [1, 2, 3]}), path
    )
    rows = list(iter_parquet(path, ["text", "lang", "id"]))  # a column the file lacks is left out
    assert rows == [
        (1, {"text": "a", "lang": "fra"}),
        (2, {"text": "b", "lang": "deu"}),
        (3, {"text": "c", "lang": "ell"}),
    ]
    with pytest.raises(BadInputError, match=rf"{path}: no body column: no column 'body'"):
        list(iter_parquet(path, ["body"], {"body": "no body column"}))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    errors: list[BadInputError] = []
    assert list(iter_parquet(broken, ["text"], on_error=errors.append)) == []
    assert [e.reason for e in errors] == ["unreadable parquet file"]


def test_bad_input_error_pickles_and_is_an_expected_failure():
    err = BadInputError("broken JSON line", "f.jsonl", 3, "Expecting value")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) == "f.jsonl:3: broken JSON line: Expecting value"
    assert isinstance(err, MmbertError) and isinstance(err, ValueError)
