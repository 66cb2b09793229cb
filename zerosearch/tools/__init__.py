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


# keys of every HTTP backend's sub-block: its request pool and retry policy
_CLIENT_KEYS = ("concurrency", "timeout", "max_retries", "backoff")


def _section(cfg: Mapping[str, Any], section: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """Constructor arguments named as ``keys``, read in order from ``cfg[section]`` (``cfg`` itself when
    ``section`` is empty); a missing key is an error naming its full path."""
    prefix = f"{section}." if section else ""
    return {key: _get(cfg, prefix + key) for key in keys}


def build_search_tool(retriever_cfg: Mapping[str, Any], mode: str) -> SearchTool:
    """The search tool for ``mode`` (one of ``SEARCH_MODES``) configured by ``retriever_cfg``.

    ``retriever_cfg`` is the ``retriever`` block (a DictConfig or a plain dict); it needs ``topk``,
    ``cache_size``, ``seed`` and the sub-block of the mode's backend.
    """
    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}; valid modes: {', '.join(SEARCH_MODES)}")
    common = _section(retriever_cfg, "", ("topk", "cache_size", "seed"))
    if mode in ("simulate_sft", "simulate_prompt"):
        from zerosearch.prompts import simulate_prompt_templates
        from zerosearch.tools.simulation import SimulationSearchTool

        return SimulationSearchTool(
            mode=mode,
            hosts=_get(retriever_cfg, "simulation.host"),
            **_section(retriever_cfg, "simulation", ("port", "model", "protocol", "temperature", "max_tokens",
                                                     *_CLIENT_KEYS, "system_prompt", "tokenizer")),
            prompt_templates=simulate_prompt_templates(retriever_cfg),
            **common,
        )
    if mode == "wiki":
        from zerosearch.tools.wiki import WikiSearchTool

        return WikiSearchTool(**_section(retriever_cfg, "wiki", ("host", "port", *_CLIENT_KEYS, "max_batch_size")),
                              **common)
    from zerosearch.tools.google import GoogleSearchTool

    return GoogleSearchTool(**_section(retriever_cfg, "google",
                                       ("api_key_env", "title_snippet_sep", "cache_dir", *_CLIENT_KEYS)), **common)
