"""A tiny Qwen2 policy that always searches, so trainer-level tests exercise the search path.

The random tiny model of ``zerosearch.miniature.tiny`` almost never writes ``<search>...</search>``. This
module rewires it into a bigram model: with every attention output projection and MLP down
projection set to zero, the last hidden state is ``RMSNorm(embedding(last token))``, so the next
token depends on the last token only. A few tokens then get orthogonal embeddings and a large
logit for a chosen successor:

    newline            -> <search>        (the generation prompt and every observation end in a newline)
    <search>           -> " capital"
    " capital"         -> " city"
    " city"            -> </search>
    </search>          -> <answer>        (only reached in the last turn, which does not stop at </search>)

The answer's content after ``<answer>`` is sampled from the random bigram rows, so rewards (see
``hash_reward.py``) differ between samples and the sampling RNG matters.
"""

from __future__ import annotations

from pathlib import Path

CHAIN = [("\n", "<search>"), ("<search>", " capital"), (" capital", " city"), (" city", "</search>"),
         ("</search>", "<answer>")]
QUERY = "capital city"
LOGIT = 40.0


def build_searching_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Build the tiny policy into ``out_dir`` and rewire it (see the module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zerosearch.miniature.tiny import build_tiny_model

    out = build_tiny_model(out_dir, size="tiny", seed=seed)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)

    def token_id(text: str) -> int:
        ids = tok.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"{text!r} is not one token of the tiny tokenizer: {ids}")
        return ids[0]

    hidden = model.config.hidden_size
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = model.model.embed_tokens.weight
        head = model.lm_head.weight
        sources = [token_id(a) for a, _ in CHAIN]
        for dim, (src, (_, dst)) in enumerate(zip(sources, CHAIN)):
            embed[src].zero_()
            embed[src, dim] = 1.0  # RMSNorm turns this into sqrt(hidden) along axis `dim`
            head[:, dim] = 0.0
            head[token_id(dst), dim] = LOGIT / hidden**0.5
    model.save_pretrained(out)
    return Path(out)
