"""Reading a retrieval corpus (jsonl) into ``Document`` objects.

Two line formats are accepted, and may not be mixed within one file:

* ours: ``{"id": str, "title": str, "text": str}`` (``data/corpus/wiki_paragraphs.jsonl``);
* Search-R1's: ``{"id": str, "contents": str}`` with ``contents = '"<title>"\\n<text>'``.

Every problem is reported with the file name and the 1-based line number.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Iterable

from zerosearch.data.jsonl import iter_jsonl

FORMAT_TITLE_TEXT = "title_text"
FORMAT_CONTENTS = "contents"


class CorpusError(ValueError):
    """A corpus file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Document:
    """One retrievable passage.

    Attributes:
        id: unique id within the corpus.
        title: the page title (may be empty).
        text: the passage body, without the title.
        contents: Search-R1's single-string form, ``'"<title>"\\n<text>'``; kept verbatim when the
            corpus was in that format.
    """

    id: str
    title: str
    text: str
    contents: str

    @classmethod
    def from_title_text(cls, doc_id: str, title: str, text: str) -> "Document":
        return cls(id=doc_id, title=title, text=text, contents=f'"{title}"\n{text}')

    @classmethod
    def from_contents(cls, doc_id: str, contents: str) -> "Document":
        """Split Search-R1 ``contents``: the first line (quotes stripped) is the title.

        A ``contents`` without a newline has no title line: it is all text.
        """
        head, sep, rest = contents.partition("\n")
        if not sep:
            return cls(id=doc_id, title="", text=contents, contents=contents)
        title = head.strip()
        if len(title) >= 2 and title[0] == '"' and title[-1] == '"':
            title = title[1:-1]
        return cls(id=doc_id, title=title, text=rest, contents=contents)

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "title": self.title, "text": self.text, "contents": self.contents}

    @property
    def index_text(self) -> str:
        """The text a lexical or dense index sees: title, newline, body."""
        return f"{self.title}\n{self.text}" if self.title else self.text


def _field(obj: dict, key: str, where: str) -> str:
    if key not in obj:
        raise CorpusError(f"{where}: missing key {key!r} (keys present: {sorted(obj)})")
    value = obj[key]
    if key == "id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        expected = "a string or an integer" if key == "id" else "a string"
        raise CorpusError(f"{where}: key {key!r} must be {expected}, got {type(value).__name__}")
    return value


def parse_line(obj: object, where: str) -> tuple[Document, str]:
    """One decoded JSON line -> (Document, format name). ``where`` is ``"file:line"`` for errors."""
    if not isinstance(obj, dict):
        raise CorpusError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    doc_id = _field(obj, "id", where)
    if "contents" in obj:
        return Document.from_contents(doc_id, _field(obj, "contents", where)), FORMAT_CONTENTS
    if "title" in obj or "text" in obj:
        title = _field(obj, "title", where)
        text = _field(obj, "text", where)
        return Document.from_title_text(doc_id, title, text), FORMAT_TITLE_TEXT
    raise CorpusError(
        f"{where}: expected keys 'id','title','text' or Search-R1's 'id','contents'; " f"got {sorted(obj)}"
    )


def iter_corpus(path: str | os.PathLike) -> Iterable[Document]:
    """Yield the documents of a jsonl corpus, checking every line. Blank lines are skipped."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise CorpusError(f"corpus file {name!r} does not exist or is not a file")
    seen: dict[str, int] = {}
    file_format: str | None = None
    for where, obj in iter_jsonl(name, error=CorpusError):
        doc, line_format = parse_line(obj, where)
        if file_format is None:
            file_format = line_format
        elif line_format != file_format:
            raise CorpusError(
                f"{where}: line is in the {line_format!r} format but earlier lines are in the "
                f"{file_format!r} format; one file must use one format"
            )
        if doc.id in seen:
            raise CorpusError(f"{where}: duplicate id {doc.id!r} (first seen on line {seen[doc.id]})")
        seen[doc.id] = int(where.rsplit(":", 1)[1])
        yield doc


def load_corpus(path: str | os.PathLike) -> list[Document]:
    """Read a whole corpus; an empty file is an error."""
    docs = list(iter_corpus(path))
    if not docs:
        raise CorpusError(f"corpus file {os.fspath(path)!r} holds no documents")
    return docs


def corpus_fingerprint(docs: Iterable[Document]) -> str:
    """sha256 (hex) over the ids, titles and texts, in order: the key of on-disk index caches."""
    digest = hashlib.sha256()
    for doc in docs:
        for part in (doc.id, doc.title, doc.text):
            encoded = part.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
    return digest.hexdigest()


def cache_key(docs: Iterable[Document], **spec: object) -> str:
    """32 hex characters naming an index of ``docs`` built with ``spec`` (JSON values): a cache's file name."""
    spec = {"corpus": corpus_fingerprint(docs), **spec}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]
