"""HTTP server for the simulation LLM: sglang's native ``/generate`` and OpenAI chat completions.

The CPU stand-in for sglang (which cannot run on CPU) and a reference implementation of the two
protocols the simulation search client speaks::

    python -m zerosearch.simulation.server --model PATH [--backend hf|vllm] [--host 127.0.0.1]
        [--port 6001] [--served-model-name simulation] [--max-batch 64] [--max-wait-ms 5]

Endpoints:
    POST /generate              sglang native: {"text": str | [str] (or "input_ids"), "sampling_params":
                                {...} | [{...}], "rid"} -> {"text", "output_ids", "meta_info"} (a list for
                                a list). The text is tokenized as is (no chat template), as sglang does.
    POST /v1/chat/completions   OpenAI: messages (string or text-part content), chat template applied.
    POST /v1/completions        OpenAI: prompt str | [str], no template.
    GET  /health, /v1/models, /get_model_info, /get_server_info (batching counters).

Concurrent requests are batched (see ``batcher.py``). Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from zerosearch.simulation.backend import GenerationBackend
from zerosearch.simulation.batcher import RequestBatcher
from zerosearch.simulation.sampling import (
    GenerationRequest,
    GenerationResult,
    RequestError,
    from_openai,
    from_sglang,
    message_text,
)

logger = logging.getLogger("zerosearch.simulation.server")


class ModelNotFound(Exception):
    pass


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


async def _json_body(request: Request) -> dict:
    try:
        body = await request.json()
    except Exception:
        raise RequestError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


def _check_model(body: dict, served_model_name: str) -> None:
    # An empty or missing name is accepted (sglang ignores it); another model's name is refused (as vLLM does).
    model = body.get("model")
    if model not in (None, "", served_model_name):
        raise ModelNotFound(f"model {model!r} does not exist; this server serves {served_model_name!r}")


def _generate_prompts(body: dict, tokenizer) -> tuple[list[list[int]], bool]:
    """Prompt token ids of a /generate body, and whether it was a batch (list) request."""
    text, input_ids = body.get("text"), body.get("input_ids")
    if (text is None) == (input_ids is None):
        raise RequestError("give exactly one of 'text' or 'input_ids'")
    if text is not None:
        is_batch = isinstance(text, list)
        texts = text if is_batch else [text]
        if not texts or any(not isinstance(t, str) or not t for t in texts):
            raise RequestError("'text' must be a non-empty string or a non-empty list of them")
        return [tokenizer(t).input_ids for t in texts], is_batch
    is_batch = isinstance(input_ids, list) and bool(input_ids) and isinstance(input_ids[0], list)
    rows = input_ids if is_batch else [input_ids]
    if not rows or any(not isinstance(r, list) or not r or not all(isinstance(t, int) and t >= 0 for t in r) for r in rows):
        raise RequestError("'input_ids' must be a non-empty list of token ids or a list of such lists")
    return rows, is_batch


def _per_prompt(value: Any, n: int, name: str) -> list:
    if isinstance(value, list):
        if len(value) != n:
            raise RequestError(f"'{name}' has {len(value)} entries for {n} prompts")
        return value
    return [value] * n


def create_app(backend: GenerationBackend, served_model_name: str = "simulation", model_path: str = "",
               max_batch: int = 64, max_wait_s: float = 0.005, default_max_tokens: int = 512) -> FastAPI:
    """The FastAPI app around a backend. The batcher starts and stops with the app (lifespan)."""
    batcher = RequestBatcher(backend, max_batch=max_batch, max_wait_s=max_wait_s)
    tokenizer = backend.tokenizer

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="ZeroSearch simulation server", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(RequestError)
    async def _bad_request(_request: Request, err: RequestError):
        return _error(400, str(err), "invalid_request_error")

    @app.exception_handler(ModelNotFound)
    async def _not_found(_request: Request, err: ModelNotFound):
        return _error(404, str(err), "NotFoundError")

    @app.exception_handler(Exception)
    async def _internal(_request: Request, err: Exception):
        logger.exception("generation failed")
        return _error(500, f"{type(err).__name__}: {err}", "internal_error")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served_model_name, "object": "model", "created": 0,
                                             "owned_by": "zerosearch", "root": model_path}]}

    @app.get("/get_model_info")
    async def model_info():
        return {"model_path": model_path, "served_model_name": served_model_name, "is_generation": True}

    @app.get("/get_server_info")
    async def server_info():
        return {"backend": backend.name, "served_model_name": served_model_name, "model_path": model_path,
                "max_batch": max_batch, "max_wait_ms": max_wait_s * 1000.0, "stats": batcher.stats.as_dict()}

    @app.post("/generate")
    async def generate(request: Request):
        started = time.monotonic()
        body = await _json_body(request)
        for flag in ("stream", "return_logprob"):
            if body.get(flag):
                raise RequestError(f"'{flag}' is not supported by this server")
        prompts, is_batch = _generate_prompts(body, tokenizer)
        params = _per_prompt(body.get("sampling_params"), len(prompts), "sampling_params")
        rids = _per_prompt(body.get("rid"), len(prompts), "rid")
        reqs = [GenerationRequest(prompt_ids=list(p), sampling=from_sglang(sp)) for p, sp in zip(prompts, params)]
        results = await batcher.submit(reqs)
        latency = time.monotonic() - started
        out = [{"text": r.text, "output_ids": r.output_ids,
                "meta_info": {"id": rid if rid is not None else uuid.uuid4().hex, "finish_reason": r.finish_reason,
                              "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                              "cached_tokens": 0, "e2e_latency": latency}}
               for r, rid in zip(results, rids)]
        return out if is_batch else out[0]

    def _usage(result: GenerationResult) -> dict:
        return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await _json_body(request)
        _check_model(body, served_model_name)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("'messages' must be a non-empty list")
        conversation = []
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
                raise RequestError(f"messages[{i}] must be an object with a 'role'")
            conversation.append({"role": msg["role"], "content": message_text(msg.get("content"), i)})
        if not getattr(tokenizer, "chat_template", None):
            raise RequestError("the served model's tokenizer has no chat template; use /generate or /v1/completions")
        prompt_text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False).input_ids
        spec = from_openai(body, default_max_tokens)
        (result,) = await batcher.submit([GenerationRequest(prompt_ids=prompt_ids, sampling=spec)])
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": served_model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                             "finish_reason": result.openai_finish_reason, "logprobs": None}],
                "usage": _usage(result)}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _json_body(request)
        _check_model(body, served_model_name)
        prompt = body.get("prompt")
        texts = prompt if isinstance(prompt, list) else [prompt]
        if not texts or any(not isinstance(t, str) or not t for t in texts):
            raise RequestError("'prompt' must be a non-empty string or a list of them")
        spec = from_openai(body, default_max_tokens=16)
        results = await batcher.submit([GenerationRequest(prompt_ids=tokenizer(t).input_ids, sampling=spec)
                                        for t in texts])
        prompt_tokens = sum(r.prompt_tokens for r in results)
        completion_tokens = sum(r.completion_tokens for r in results)
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": served_model_name,
                "choices": [{"index": i, "text": r.text, "finish_reason": r.openai_finish_reason, "logprobs": None}
                            for i, r in enumerate(results)],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    return app


def build_backend(args: argparse.Namespace) -> GenerationBackend:
    if args.backend == "hf":
        from zerosearch.simulation.hf_backend import HFBackend

        return HFBackend(args.model, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code)
    from zerosearch.simulation.vllm_backend import VLLMBackend

    return VLLMBackend(args.model, dtype=args.dtype, max_model_len=args.max_model_len, seed=args.seed,
                       gpu_memory_utilization=args.gpu_memory_utilization, tensor_parallel_size=args.tp,
                       trust_remote_code=args.trust_remote_code)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m zerosearch.simulation.server", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="model folder (Hugging Face format)")
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf", help="generation engine")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the server to the network)")
    p.add_argument("--port", type=int, default=6001, help="port to bind")
    p.add_argument("--served-model-name", default="simulation", help="name clients put in 'model'")
    p.add_argument("--max-batch", type=int, default=64, help="most prompts per generate call")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with")
    p.add_argument("--default-max-tokens", type=int, default=512, help="chat max_tokens when the client gives none")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    p.add_argument("--device", default="auto", help="hf backend: auto, cpu, cuda, cuda:N")
    p.add_argument("--max-model-len", type=int, default=None, help="vllm backend: context length cap")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.8, help="vllm backend on GPU")
    p.add_argument("--tp", type=int, default=1, help="vllm backend: tensor-parallel size")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling RNG for requests without a seed")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    args = p.parse_args(argv)
    for name in ("max_batch", "default_max_tokens", "tp"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 1 <= args.port <= 65535:
        p.error(f"--port must be in 1..65535, got {args.port}")
    if args.max_wait_ms < 0:
        p.error(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    return args


def main(argv: list[str] | None = None) -> None:
    import os

    import torch
    import uvicorn

    args = parse_args(argv)
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        raise SystemExit(f"--model: {args.model} is not a model folder (no config.json)")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    backend = build_backend(args)
    app = create_app(backend, served_model_name=args.served_model_name, model_path=os.path.abspath(args.model),
                     max_batch=args.max_batch, max_wait_s=args.max_wait_ms / 1000.0,
                     default_max_tokens=args.default_max_tokens)
    logger.info("serving %s (%s backend) as %r on http://%s:%d", args.model, args.backend,
                args.served_model_name, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
