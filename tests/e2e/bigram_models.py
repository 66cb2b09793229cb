"""Tiny models rewired into bigram machines that write a fixed text, for end-to-end tests.

With every attention output projection and MLP down projection zeroed, the last hidden state of
a Qwen2 model is RMSNorm(embedding(last token)), so the next token depends on the last token
only. Giving each token of a chain an orthogonal embedding and a large logit for its successor
makes the model write the chain deterministically (at any temperature near 1).
"""

from __future__ import annotations

from pathlib import Path

LOGIT = 40.0


def rewire_as_bigram(model_dir: str | Path, text: str, end_with_eos: bool = True) -> Path:
    """Make the model at ``model_dir`` continue ``text[0]`` with the rest of ``text`` (then EOS).

    ``text`` is tokenized; its tokens must be distinct (each has one successor). The first token
    is the trigger (e.g. the newline that ends a chat generation prompt).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = tok.encode(text, add_special_tokens=False)
    if end_with_eos:
        ids.append(tok.eos_token_id)
    if len(set(ids[:-1])) != len(ids) - 1:
        raise ValueError(f"tokens of {text!r} repeat ({ids}); a bigram chain needs distinct tokens")
    hidden = model.config.hidden_size
    if len(ids) - 1 > hidden:
        raise ValueError("chain longer than the hidden size")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        for dim, (src, dst) in enumerate(zip(ids[:-1], ids[1:])):
            embed[src].zero_()
            embed[src, dim] = 1.0
            head[:, dim] = 0.0
            head[dst, dim] = LOGIT / hidden**0.5
    model.save_pretrained(model_dir)
    return Path(model_dir)
