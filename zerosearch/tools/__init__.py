"""Search tools: one interface (``base.SearchTool``), one backend per search mode.

    simulate_sft, simulate_prompt   simulation.SimulationSearchTool (an LLM writes the documents)
    wiki                            wiki.WikiSearchTool (local retrieval server)
    google                          google.GoogleSearchTool (SerpAPI)

``build_search_tool(retriever_cfg, mode)`` builds one from the ``retriever`` config block
(configs/retriever/default.yaml documents every key). ``SearchHealth`` (failure.py) judges a tool's
recent outcomes and stops the run when its server is down or answers only garbage.
"""

from __future__ import annotations

from typing import Any, Mapping

from zerosearch.tools.base import NO_INFORMATION, SearchRequest, SearchResult, SearchTool
from zerosearch.tools.failure import FailurePolicy, MalformedRepliesError, SearchFailureError, SearchHealth

SEARCH_MODES = ("simulate_sft", "simulate_prompt", "google", "wiki")

__all__ = [
    "NO_INFORMATION",
    "SEARCH_MODES",
    "FailurePolicy",
    "MalformedRepliesError",
    "SearchFailureError",
    "SearchHealth",
    "SearchRequest",
    "SearchResult",
    "SearchTool",
    "build_search_tool",
]


def _get(cfg: Mapping[str, Any], path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        if not hasattr(node, "keys") or part not in node:
            raise ValueError(f"retriever config is missing key '{path}' (see configs/retriever/default.yaml)")
        node = node[part]
    return node


def build_search_tool(retriever_cfg: Mapping[str, Any], mode: str) -> SearchTool:
    """The search tool for ``mode`` (one of ``SEARCH_MODES``) configured by ``retriever_cfg``.

    ``retriever_cfg`` is the ``retriever`` block (a DictConfig or a plain dict); it needs ``topk``,
    ``cache_size``, ``seed`` and the sub-block of the mode's backend.
    """
    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}; valid modes: {', '.join(SEARCH_MODES)}")
    common = {
        "topk": _get(retriever_cfg, "topk"),
        "cache_size": _get(retriever_cfg, "cache_size"),
        "seed": _get(retriever_cfg, "seed"),
    }
    if mode in ("simulate_sft", "simulate_prompt"):
        from zerosearch.prompts import simulate_prompt_templates
        from zerosearch.tools.simulation import SimulationSearchTool

        return SimulationSearchTool(
            mode=mode,
            hosts=_get(retriever_cfg, "simulation.host"),
            port=_get(retriever_cfg, "simulation.port"),
            model=_get(retriever_cfg, "simulation.model"),
            protocol=_get(retriever_cfg, "simulation.protocol"),
            temperature=_get(retriever_cfg, "simulation.temperature"),
            max_tokens=_get(retriever_cfg, "simulation.max_tokens"),
            concurrency=_get(retriever_cfg, "simulation.concurrency"),
            timeout=_get(retriever_cfg, "simulation.timeout"),
            max_retries=_get(retriever_cfg, "simulation.max_retries"),
            backoff=_get(retriever_cfg, "simulation.backoff"),
            system_prompt=_get(retriever_cfg, "simulation.system_prompt"),
            tokenizer=_get(retriever_cfg, "simulation.tokenizer"),
            prompt_templates=simulate_prompt_templates(retriever_cfg),
            **common,
        )
    if mode == "wiki":
        from zerosearch.tools.wiki import WikiSearchTool

        return WikiSearchTool(
            host=_get(retriever_cfg, "wiki.host"),
            port=_get(retriever_cfg, "wiki.port"),
            concurrency=_get(retriever_cfg, "wiki.concurrency"),
            timeout=_get(retriever_cfg, "wiki.timeout"),
            max_retries=_get(retriever_cfg, "wiki.max_retries"),
            backoff=_get(retriever_cfg, "wiki.backoff"),
            max_batch_size=_get(retriever_cfg, "wiki.max_batch_size"),
            **common,
        )
    from zerosearch.tools.google import GoogleSearchTool

    return GoogleSearchTool(
        api_key_env=_get(retriever_cfg, "google.api_key_env"),
        title_snippet_sep=_get(retriever_cfg, "google.title_snippet_sep"),
        cache_dir=_get(retriever_cfg, "google.cache_dir"),
        concurrency=_get(retriever_cfg, "google.concurrency"),
        timeout=_get(retriever_cfg, "google.timeout"),
        max_retries=_get(retriever_cfg, "google.max_retries"),
        backoff=_get(retriever_cfg, "google.backoff"),
        **common,
    )
