"""Corpus loading: both line formats, the real data, and errors naming file and line."""

import hashlib
import json
from pathlib import Path

import pytest

from zerosearch.retrieval.corpus import CorpusError, Document, corpus_fingerprint, load_corpus

DATA = Path(__file__).resolve().parents[3] / "data"


def write_lines(path: Path, lines: list) -> Path:
    path.write_text(
        "".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines), encoding="utf-8"
    )
    return path


def test_title_text_format(tmp_path):
    path = write_lines(
        tmp_path / "c.jsonl",
        [
            {"id": "d1", "title": "Paris", "text": "Capital of France."},
            {"id": 7, "title": "", "text": "No title."},
        ],
    )
    docs = load_corpus(path)
    assert docs[0] == Document("d1", "Paris", "Capital of France.", '"Paris"\nCapital of France.')
    assert docs[1].id == "7" and docs[1].title == "" and docs[1].text == "No title."
    assert docs[0].to_dict() == {
        "id": "d1",
        "title": "Paris",
        "text": "Capital of France.",
        "contents": '"Paris"\nCapital of France.',
    }


def test_search_r1_contents_format_real_rows():
    docs = load_corpus(DATA / "format" / "search_r1_corpus_rows.jsonl")
    raw = [
        json.loads(line)
        for line in (DATA / "format" / "search_r1_corpus_rows.jsonl").read_text().splitlines()
    ]
    assert len(docs) == len(raw) == 3
    first = docs[0]
    assert first.id == "0"
    assert first.title == "Evan Morris"
    assert first.text.startswith("Evan Morris Evan L. Morris (January 26, 1977")
    assert first.contents == raw[0]["contents"]  # kept verbatim
    assert first.title == "Evan Morris" and "\n" not in first.title
    assert docs[1].title == "Horatio Hale"


def test_contents_without_title_line_is_all_text(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [{"id": "x", "contents": "just a passage"}])
    (doc,) = load_corpus(path)
    assert (doc.title, doc.text, doc.contents) == ("", "just a passage", "just a passage")


def test_blank_lines_skipped_and_line_numbers_kept(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "title": "A", "text": "x"}\n\n{"id": "b", "title": "B"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"c\.jsonl:3: missing key 'text'"):
        load_corpus(path)


@pytest.mark.parametrize(
    "lines, pattern",
    [
        (['{"id": "a", "title": "A", "text": "x"}', "{not json"], r":2: not valid JSON"),
        ([{"id": "a", "text": "x"}], r":1: missing key 'title'"),
        ([{"title": "A", "text": "x"}], r":1: missing key 'id'"),
        ([{"id": "a", "title": "A", "text": 3}], r":1: key 'text' must be a string"),
        ([{"id": True, "title": "A", "text": "x"}], r":1: key 'id' must be a string or an integer"),
        ([{"id": "a", "contents": None}], r":1: key 'contents' must be a string"),
        ([["a", "b"]], r":1: expected a JSON object, got list"),
        ([{"id": "a", "body": "x"}], r":1: expected keys 'id','title','text' or Search-R1's"),
        (
            [
                {"id": "a", "title": "A", "text": "x"},
                {"id": "b", "title": "B", "text": "y"},
                {"id": "a", "title": "C", "text": "z"},
            ],
            r":3: duplicate id 'a' \(first seen on line 1\)",
        ),
        (
            [{"id": "a", "title": "A", "text": "x"}, {"id": "b", "contents": '"B"\ny'}],
            r":2: .*'contents' format",
        ),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, lines, pattern):
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(CorpusError, match=r"bad\.jsonl" + pattern):
        load_corpus(path)


def test_non_utf8_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        b'{"id": "a", "title": "A", "text": "x"}\n{"id": "b", "title": "Caf\xe9", "text": "y"}\n'
    )
    with pytest.raises(CorpusError, match=r"latin1\.jsonl:2: not valid UTF-8"):
        load_corpus(path)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="empty.jsonl.*no documents"):
        load_corpus(empty)
    with pytest.raises(CorpusError, match="nope.jsonl.*does not exist"):
        load_corpus(tmp_path / "nope.jsonl")


def test_real_corpus_ids_follow_the_documented_rule():
    docs = load_corpus(DATA / "corpus" / "wiki_paragraphs.jsonl")
    assert len(docs) == 4364
    for doc in docs[:500]:
        expected = "wiki-" + hashlib.sha1((doc.title + "\n" + doc.text).encode("utf-8")).hexdigest()[:16]
        assert doc.id == expected


def test_fingerprint_tracks_content_and_field_boundaries():
    a = [Document.from_title_text("1", "ab", "c")]
    b = [Document.from_title_text("1", "a", "bc")]
    assert corpus_fingerprint(a) == corpus_fingerprint([Document.from_title_text("1", "ab", "c")])
    assert corpus_fingerprint(a) != corpus_fingerprint(b)
    assert corpus_fingerprint(a) != corpus_fingerprint([Document.from_title_text("2", "ab", "c")])
