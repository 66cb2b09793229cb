"""The simulation server over HTTP with a tiny model: sglang /generate, OpenAI chat, batching, errors.

Expected tokens come from a greedy argmax loop over an independently loaded copy of the model.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

pytestmark = pytest.mark.slow  # starts a server


@pytest.fixture(scope="module")
def client(live_server):
    with httpx.Client(base_url=live_server.url, timeout=60) as c:
        yield c


def test_health_models_and_info(client, tiny_model_dir):
    assert client.get("/health").status_code == 200
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["sim-test"]
    assert client.get("/get_model_info").json()["model_path"] == tiny_model_dir
    info = client.get("/get_server_info").json()
    assert info["backend"] == "hf" and info["max_batch"] == 16


def test_generate_single_greedy_matches_reference(client, reference_model, greedy):
    _, tok = reference_model
    prompt = "Doc 1: The George Washington Bridge"
    ids = tok(prompt).input_ids
    expected = greedy(ids, 10)
    r = client.post("/generate", json={"text": prompt, "rid": "q1",
                                       "sampling_params": {"max_new_tokens": 10, "temperature": 0, "ignore_eos": True}})
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body, dict)
    assert body["output_ids"] == expected
    assert body["text"] == tok.decode(expected, skip_special_tokens=True)
    meta = body["meta_info"]
    assert meta["id"] == "q1"
    assert meta["finish_reason"] == {"type": "length", "length": 10}
    assert (meta["prompt_tokens"], meta["completion_tokens"]) == (len(ids), 10)


def test_generate_batch_list_in_list_out(client, reference_model, greedy):
    _, tok = reference_model
    prompts = ["Query: who designed the bridge?", "hi", "It opened in 1931 and was designed by"]
    params = [{"max_new_tokens": n, "temperature": 0, "ignore_eos": True} for n in (6, 9, 4)]
    body = client.post("/generate", json={"text": prompts, "sampling_params": params, "rid": ["a", "b", "c"]}).json()
    assert isinstance(body, list) and len(body) == 3
    for prompt, n, item, rid in zip(prompts, (6, 9, 4), body, "abc"):
        assert item["output_ids"] == greedy(tok(prompt).input_ids, n)
        assert item["meta_info"]["id"] == rid
    # input_ids form, one shared sampling_params for the batch
    rows = [tok(p).input_ids for p in prompts[:2]]
    body = client.post("/generate", json={"input_ids": rows, "sampling_params":
                                          {"max_new_tokens": 5, "temperature": 0, "ignore_eos": True}}).json()
    assert [b["output_ids"] for b in body] == [greedy(r, 5) for r in rows]


def _stop_from(text: str) -> str:
    """A printable 3-character stop string from inside ``text`` (not at its start), without spaces."""
    for k in range(1, len(text) - 3):
        cand = text[k:k + 3]
        if cand.isprintable() and " " not in cand and "\ufffd" not in cand:
            return cand
    pytest.fail("the greedy text has no printable 3-character stop string to test with")


def test_stop_strings_trim_and_keep(client, reference_model, greedy):
    _, tok = reference_model
    prompt = "Doc 2: It opened in 1931"
    ids = tok(prompt).input_ids
    full_ids = greedy(ids, 24)
    full = tok.decode(full_ids, skip_special_tokens=True)
    stop = _stop_from(full)
    cut = full.index(stop)
    sp = {"max_new_tokens": 24, "temperature": 0, "ignore_eos": True, "stop": [stop, "@@never@@"]}
    body = client.post("/generate", json={"text": prompt, "sampling_params": sp}).json()
    assert body["text"] == full[:cut]
    assert body["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop}
    out = body["output_ids"]
    assert out == full_ids[:len(out)] and len(out) < 24
    assert stop in tok.decode(out) and stop not in tok.decode(out[:-1])  # ends at the completing token
    kept = client.post("/generate", json={"text": prompt, "sampling_params": {**sp, "no_stop_trim": True}}).json()
    assert kept["text"] == full[:cut + len(stop)]


def test_stop_token_ids_end_the_row(client, reference_model, greedy):
    _, tok = reference_model
    prompt = "Query: bridge"
    full_ids = greedy(tok(prompt).input_ids, 12)
    target = full_ids[4]
    expected = full_ids[: full_ids.index(target) + 1]
    body = client.post("/generate", json={"text": prompt, "sampling_params": {
        "max_new_tokens": 12, "temperature": 0, "ignore_eos": True, "stop_token_ids": [target]}}).json()
    assert body["output_ids"] == expected
    assert body["meta_info"]["finish_reason"] == {"type": "stop", "matched": target}


def test_chat_completions_with_the_openai_client(live_server, reference_model, greedy):
    from openai import OpenAI

    _, tok = reference_model
    user = "Generate five documents for: who designed the bridge?"
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": user}]
    prompt_ids = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False).input_ids
    expected = greedy(prompt_ids, 7)
    client = OpenAI(base_url=live_server.url + "/v1", api_key="EMPTY", timeout=60, max_retries=0)
    resp = client.chat.completions.create(
        model="sim-test", max_tokens=7, temperature=0,
        messages=[{"role": "system", "content": ""}, {"role": "user", "content": [{"type": "text", "text": user}]}],
        extra_body={"ignore_eos": True})
    assert resp.choices[0].message.content == tok.decode(expected, skip_special_tokens=True)
    assert resp.choices[0].finish_reason == "length"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (len(prompt_ids), 7)
    # An empty model name is accepted (sglang style), another model's name is not (vLLM style).
    ok = httpx.post(live_server.url + "/v1/chat/completions", timeout=60,
                    json={"model": "", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] <= 2
    bad = httpx.post(live_server.url + "/v1/chat/completions", timeout=60,
                     json={"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]})
    assert bad.status_code == 404 and "sim-test" in bad.json()["error"]["message"]


def test_seeded_sampling_reproduces(client):
    body = {"messages": [{"role": "user", "content": "Doc 1:"}], "max_tokens": 12, "temperature": 1.0,
            "seed": 1234, "ignore_eos": True}
    first = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
    second = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
    assert first == second


@pytest.mark.parametrize("path, payload, status, needle", [
    ("/generate", {"sampling_params": {}}, 400, "exactly one of 'text' or 'input_ids'"),
    ("/generate", {"text": "a", "input_ids": [1]}, 400, "exactly one"),
    ("/generate", {"text": ["a", "b"], "sampling_params": [{}]}, 400, "sampling_params"),
    ("/generate", {"text": "a", "stream": True}, 400, "stream"),
    ("/generate", {"text": "a", "sampling_params": {"max_new_tokens": -3}}, 400, "max_new_tokens"),
    ("/generate", {"input_ids": [[1, "x"]]}, 400, "input_ids"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"content": "x"}]}, 400, "role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "stream": True}, 400, "stream"),
])
def test_bad_requests_get_clear_errors(client, path, payload, status, needle):
    r = client.post(path, json=payload)
    assert r.status_code == status
    assert needle in r.json()["error"]["message"]


def test_invalid_json_is_a_400(client):
    r = client.post("/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


def test_concurrent_requests_are_batched(client, live_server, reference_model, greedy):
    _, tok = reference_model
    before = client.get("/get_server_info").json()["stats"]
    prompts = [f"Query {i}: bridge" for i in range(8)]

    async def fire():
        async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as ac:
            return await asyncio.gather(*[
                ac.post("/generate", json={"text": p, "sampling_params":
                                           {"max_new_tokens": 6, "temperature": 0, "ignore_eos": True}})
                for p in prompts])

    responses = asyncio.run(fire())
    after = client.get("/get_server_info").json()["stats"]
    assert all(r.status_code == 200 for r in responses)
    assert after["prompts"] - before["prompts"] == 8
    assert after["batches"] - before["batches"] <= 2  # 8 requests within the 150 ms window -> 1 (or 2) calls
    assert after["max_batch_size"] >= 4
    # Batching (left padding) does not change what each row generates.
    for p, r in zip(prompts, responses):
        assert r.json()["output_ids"] == greedy(tok(p).input_ids, 6)
