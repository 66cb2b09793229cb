"""The local retrieval server: one HTTP contract in front of every backend (BM25, dense).

Endpoints:

``POST /retrieve``, batch form (Search-R1's contract)::

    {"queries": [str, ...], "topk": int = default_topk, "return_scores": bool = false}
    -> {"result": [[{"document": {"id", "title", "text", "contents"}, "score": float}, ...], ...]}
       (with return_scores false each inner item is the document object alone)

``POST /retrieve`` or ``POST /search``, single form (ZeroSearch's wiki mode)::

    {"query": str, "top_k": int = default_topk}
    -> [{"id", "title", "text", "score"}, ...]

``GET /health`` -> ``{"status": "ok", "method", "documents", "limits", "stats"}``.

The form is chosen by the body keys (``queries`` or ``query``). Unknown keys, wrong types and
values outside the limits get a 4xx JSON reply ``{"error": "...", "detail": [{"field",
"message"}]}`` naming the fields. Bodies over ``max_body_bytes`` get 413 before parsing. Request
data is only ever decoded as JSON.

Run: ``python -m zerosearch.retrieval.server --corpus data/corpus/wiki_paragraphs.jsonl``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import sys
from typing import Annotated, Any, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.concurrency import run_in_threadpool

from zerosearch.retrieval.base import Hit, Retriever
from zerosearch.retrieval.limits import BodySizeLimit, BodyTooLarge, RequestLog

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6002
# Room for a full default batch (512 queries x 2048 characters) even when a client writes every
# character as a 6-byte \uXXXX escape.
DEFAULT_MAX_BODY_BYTES = 8 << 20


def _request_models(max_batch: int, max_query_chars: int, max_topk: int) -> tuple[type, type]:
    """Pydantic models of the two request forms, with this server's limits built in."""
    Query = Annotated[str, StringConstraints(max_length=max_query_chars)]
    TopK = Annotated[int, Field(ge=1, le=max_topk)]
    strict = ConfigDict(extra="forbid", strict=True)

    class BatchRequest(BaseModel):
        model_config = strict
        queries: Annotated[list[Query], Field(min_length=1, max_length=max_batch)]
        topk: Optional[TopK] = None
        return_scores: bool = False

        def search_args(self) -> tuple[list[str], Optional[int]]:
            """(queries, topk or None for the server's default)."""
            return self.queries, self.topk

    class SingleRequest(BaseModel):
        model_config = strict
        query: Query
        top_k: Optional[TopK] = None

        def search_args(self) -> tuple[list[str], Optional[int]]:
            """(queries, topk or None for the server's default)."""
            return [self.query], self.top_k

    return BatchRequest, SingleRequest


def _error(status: int, message: str, detail: list[dict[str, str]] | None = None) -> JSONResponse:
    payload: dict[str, Any] = {"error": message}
    if detail:
        payload["detail"] = detail
    return JSONResponse(payload, status_code=status)


def _validation_error(exc: ValidationError) -> JSONResponse:
    detail = []
    for err in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in err["loc"]) or "body"
        detail.append({"field": field, "message": err["msg"]})
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in detail)
    return _error(422, f"invalid request: {summary}", detail)


def _score(value: float) -> float:
    return round(float(value), 6)


def create_app(
    retriever: Retriever,
    *,
    max_batch: int = 512,
    max_query_chars: int = 2048,
    max_topk: int = 50,
    default_topk: int = 3,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """Build the FastAPI app serving ``retriever``.

    Args:
        retriever: the backend.
        max_batch: most queries in one batch request.
        max_query_chars: longest query, in characters.
        max_topk: largest ``topk`` / ``top_k`` accepted.
        default_topk: used when a request gives no (or a null) ``topk`` / ``top_k``.
        max_body_bytes: larger request bodies get 413 before parsing.
    """
    for name, value in (
        ("max_batch", max_batch),
        ("max_query_chars", max_query_chars),
        ("max_topk", max_topk),
        ("default_topk", default_topk),
        ("max_body_bytes", max_body_bytes),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"create_app: {name} must be a positive integer, got {value!r}")
    if default_topk > max_topk:
        raise ValueError(f"create_app: default_topk ({default_topk}) exceeds max_topk ({max_topk})")

    BatchRequest, SingleRequest = _request_models(max_batch, max_query_chars, max_topk)
    limits = {
        "max_batch": max_batch,
        "max_query_chars": max_query_chars,
        "max_topk": max_topk,
        "default_topk": default_topk,
        "max_body_bytes": max_body_bytes,
    }
    stats = {"requests": 0, "client_errors": 0, "server_errors": 0, "queries": 0}

    app = FastAPI(title="ZeroSearch retrieval server", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.retriever = retriever
    app.state.stats = stats
    # Starlette runs the last-added middleware first: the log wraps the size limit.
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(RequestLog, logger=logger, stats=stats)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_request: Request, exc: BodyTooLarge) -> JSONResponse:
        return _error(413, exc.detail)

    async def read_object(request: Request) -> tuple[dict | None, JSONResponse | None]:
        """The body as a JSON object, or an error reply."""
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # bad UTF-8 / JSON, over-long integer literals, deep nesting
            return None, _error(
                400,
                "request body is not valid JSON (UTF-8)",
                [{"field": "body", "message": "not valid JSON"}],
            )
        if not isinstance(body, dict):
            return None, _error(
                422,
                f"invalid request: body must be a JSON object, got {type(body).__name__}",
                [{"field": "body", "message": "expected a JSON object"}],
            )
        return body, None

    async def run_search(model: type[BaseModel], body: dict) -> tuple[Any, list[list[Hit]]] | JSONResponse:
        """Validate ``body`` as ``model`` and search its queries: (request, hits per query), or the error response."""
        try:
            req = model.model_validate(body)
        except ValidationError as exc:
            return _validation_error(exc)
        queries, topk = req.search_args()
        try:
            hits = await run_in_threadpool(retriever.search, queries, topk if topk is not None else default_topk)
        except Exception as exc:  # a backend failure must still answer JSON, never a traceback
            logger.exception("retrieval failed for %d queries", len(queries))
            return _error(500, f"retrieval failed: {type(exc).__name__}")
        stats["queries"] += len(queries)
        return req, hits

    async def batch_form(body: dict) -> JSONResponse:
        found = await run_search(BatchRequest, body)
        if isinstance(found, JSONResponse):
            return found
        req, hits = found
        if req.return_scores:
            result = [[{"document": doc.to_dict(), "score": _score(s)} for doc, s in row] for row in hits]
        else:
            result = [[doc.to_dict() for doc, _ in row] for row in hits]
        return JSONResponse({"result": result})

    async def single_form(body: dict) -> JSONResponse:
        found = await run_search(SingleRequest, body)
        if isinstance(found, JSONResponse):
            return found
        _, (row,) = found
        return JSONResponse(
            [{"id": doc.id, "title": doc.title, "text": doc.text, "score": _score(s)} for doc, s in row]
        )

    @app.post("/retrieve")
    async def retrieve(request: Request) -> JSONResponse:
        body, err = await read_object(request)
        if err is not None:
            return err
        if "queries" in body and "query" in body:
            return _error(
                422,
                "invalid request: give either 'queries' (batch form) or 'query' (single form), not both",
                [{"field": "queries", "message": "conflicts with 'query'"}],
            )
        if "queries" in body:
            return await batch_form(body)
        if "query" in body:
            return await single_form(body)
        return _error(
            422,
            "invalid request: body needs 'queries' (batch form) or 'query' (single form)",
            [{"field": "queries", "message": "missing (or 'query')"}],
        )

    @app.post("/search")
    async def search(request: Request) -> JSONResponse:
        body, err = await read_object(request)
        if err is not None:
            return err
        return await single_form(body)

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "method": retriever.name,
            "documents": len(retriever.documents),
            "limits": limits,
            "stats": dict(stats),
        }

    return app


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zerosearch.retrieval.server",
        description="Serve a jsonl corpus over HTTP with BM25 or dense retrieval.",
    )
    p.add_argument("--corpus", required=True, help="jsonl corpus: {id,title,text} or Search-R1 {id,contents}")
    p.add_argument("--method", choices=("bm25", "dense"), default="bm25")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--topk-max", type=int, default=50, help="largest topk a request may ask for")
    p.add_argument("--topk-default", type=int, default=3, help="topk when a request gives none")
    p.add_argument("--max-batch", type=int, default=512, help="most queries in one batch request")
    p.add_argument("--max-query-chars", type=int, default=2048, help="longest query in characters")
    p.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="larger request bodies get 413"
    )
    p.add_argument("--index-cache", default=None, help="folder for cached indexes/embeddings (off if unset)")
    p.add_argument("--bm25-k1", type=float, default=1.5)
    p.add_argument("--bm25-b", type=float, default=0.75)
    p.add_argument("--model", default=None, help="dense: local sentence-transformers model folder")
    p.add_argument("--device", default="cpu", help="dense: torch device of the encoder")
    p.add_argument("--encode-batch-size", type=int, default=64, help="dense: encoder batch size")
    p.add_argument("--query-prefix", default="", help="dense: text put before each query (e5: 'query: ')")
    p.add_argument(
        "--passage-prefix", default="", help="dense: text put before each document (e5: 'passage: ')"
    )
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    return p


def build_retriever(args: argparse.Namespace) -> Retriever:
    """The backend named by ``--method``, over ``--corpus``."""
    if args.method == "bm25":
        from zerosearch.retrieval.bm25 import BM25Retriever

        return BM25Retriever.from_corpus(
            args.corpus, k1=args.bm25_k1, b=args.bm25_b, cache_dir=args.index_cache
        )
    from zerosearch.retrieval.dense import DenseRetriever

    return DenseRetriever.from_corpus(
        args.corpus,
        args.model,
        device=args.device,
        batch_size=args.encode_batch_size,
        query_prefix=args.query_prefix,
        passage_prefix=args.passage_prefix,
        cache_dir=args.index_cache,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from zerosearch.retrieval.corpus import CorpusError
    from zerosearch.retrieval.dense import DenseUnavailableError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.method == "dense" and not args.model:
        parser.error("--method dense needs --model: the folder of a sentence-transformers model")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in [0, 65535], got {args.port}")
    level = getattr(logging, args.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import bm25s  # noqa: F401  (imported first: on import it sets its own logger to DEBUG)

    logging.getLogger("bm25s").setLevel(max(level, logging.INFO))
    try:
        retriever = build_retriever(args)
        app = create_app(
            retriever,
            max_batch=args.max_batch,
            max_query_chars=args.max_query_chars,
            max_topk=args.topk_max,
            default_topk=args.topk_default,
            max_body_bytes=args.max_body_bytes,
        )
    except (CorpusError, DenseUnavailableError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not _is_loopback(args.host):
        logger.warning(
            "binding %s: the retrieval server has no authentication; keep it on a trusted network", args.host
        )
    logger.info(
        "serving %d documents with %s on http://%s:%d",
        len(retriever.documents),
        retriever.name,
        args.host,
        args.port,
    )
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.log_level == "debug"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
