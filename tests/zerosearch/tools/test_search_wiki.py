"""WikiSearchTool against the fake /retrieve endpoint (tests/zerosearch/tools/search_fakes.py)."""

from __future__ import annotations

import pytest
from search_fakes import dead_port

from zerosearch.tools import NO_INFORMATION, SearchRequest
from zerosearch.tools.wiki import WikiSearchTool, passage_of

pytestmark = pytest.mark.slow

RETRIEVE = "/retrieve"


def queries(*texts: str) -> list[SearchRequest]:
    return [SearchRequest(query=t, row=i) for i, t in enumerate(texts)]


def make_tool(server, **kwargs) -> WikiSearchTool:
    args = dict(host="127.0.0.1", port=server.port, topk=2, timeout=5.0, max_retries=1, backoff=0.01)
    args.update(kwargs)
    return WikiSearchTool(**args)


def test_passage_shapes():
    assert passage_of({"document": {"id": "1", "contents": '"Paris"\nCapital of\nFrance.'}, "score": 3.0}) == (
        "(Title: Paris) Capital of France."
    )
    assert passage_of({"id": "1", "contents": "no title line"}) == "no title line"
    assert passage_of({"title": "Paris", "text": "Capital  of France."}) == "(Title: Paris) Capital of France."


def test_one_batched_request_per_chunk_and_the_doc_format(fake_server):
    with make_tool(fake_server, max_batch_size=2) as tool:
        results = tool.search(queries("a", "b", "c", "a", "d"))
    bodies = fake_server.state.bodies(RETRIEVE)
    # 4 distinct queries in chunks of 2.
    assert sorted(len(b["queries"]) for b in bodies) == [2, 2]
    assert sorted(q for b in bodies for q in b["queries"]) == ["a", "b", "c", "d"]
    assert all(b["topk"] == 2 and b["return_scores"] is False for b in bodies)
    assert results[0].documents == "Doc 1: (Title: Title 1 of a) Text 1 about a.\nDoc 2: (Title: Title 2 of a) Text 2 about a."
    assert results[3].documents == results[0].documents
    assert results[2].documents.startswith("Doc 1: (Title: Title 1 of c) ")
    assert all(r.ok for r in results)


def test_plain_and_title_text_items(fake_server):
    fake_server.state.retrieve_shape = "plain"
    with make_tool(fake_server, topk=1) as tool:
        assert tool.search(queries("x"))[0].documents == "Doc 1: (Title: Title 1 of x) Text 1 about x."
        fake_server.state.retrieve_shape = "title_text"
        assert tool.search(queries("y"))[0].documents == "Doc 1: (Title: T1) text 1 for y"


def test_no_hits_is_not_a_failure(fake_server):
    fake_server.state.retrieve_shape = "empty"
    with make_tool(fake_server) as tool:
        (result,) = tool.search(queries("nothing"))
        metrics = tool.pop_metrics()
    assert result.ok and result.documents == NO_INFORMATION
    assert metrics["failures"] == 0


def test_wrong_reply_length_and_server_errors_fail_every_query_of_the_chunk(fake_server):
    # A reply of the wrong shape is malformed (the server is up); a 500 is a failure (an outage signal).
    for shape, mode, failures, malformed in (("wrong_length", "ok", 0, 2), ("document", "error500", 2, 0)):
        fake_server.state.reset()
        fake_server.state.retrieve_shape, fake_server.state.mode = shape, mode
        with make_tool(fake_server, max_retries=1) as tool:
            results = tool.search(queries("a", "b"))
            metrics = tool.pop_metrics()
        assert [r.documents for r in results] == [NO_INFORMATION] * 2
        assert not any(r.ok for r in results)
        assert [r.malformed for r in results] == [malformed > 0] * 2
        assert (metrics["failures"], metrics["malformed"], metrics["retries"]) == (failures, malformed, 1)
        assert len(fake_server.state.bodies(RETRIEVE)) == 2


def test_server_down():
    with WikiSearchTool(port=dead_port(), max_retries=1, backoff=0.01, timeout=2.0) as tool:
        results = tool.search(queries("a"))
    assert not results[0].ok and results[0].documents == NO_INFORMATION


def test_cache_serves_repeated_queries(fake_server):
    with make_tool(fake_server, cache_size=4) as tool:
        tool.search(queries("a"))
        (again,) = tool.search([SearchRequest(query="a", question="another row", row=9)])
    assert again.cached
    assert len(fake_server.state.bodies(RETRIEVE)) == 1
