"""Serving the simulation LLM: an HTTP server speaking sglang's /generate and OpenAI chat completions.

``server.py`` (the app and CLI), ``batcher.py`` (request batching), ``sampling.py`` (request
parsing), ``hf_backend.py`` / ``vllm_backend.py`` (the engines).
"""
