"""The models the benchmark runs on, built offline into the run's scratch folder (once per run).

- ``random_policy(workdir, size)``: ``zerosearch.miniature.tiny.build_tiny_model`` (random Qwen2, own BPE).
- ``primed_policy(workdir)``: the ``tiny`` model after a short supervised warm-up on real
  questions written in the search format (``<think>..</think><search> first words of the
  question </search>``, then after a short observation ``<think>..</think><answer> gold answer
  </answer>``), so that real sampling emits the stop strings and the
  search tags. A random model almost never writes ``</search>``, which would leave the stop-string
  and search phases unmeasured. To keep it cheap, each training window holds only the last
  ``PRIME_CONTEXT`` prompt tokens (the chat turn's end) before the response.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.common import REPO_ROOT, log

PRIME_SIZE = "tiny"
PRIME_STEPS = 120
PRIME_BATCH = 16
PRIME_LR = 5e-3
PRIME_QUERY_WORDS = 4
PRIME_CONTEXT = 32  # prompt tokens kept before the response in a training window
PRIME_SEED = 0
QA_FILE = REPO_ROOT / "data" / "qa" / "nq.jsonl"


def random_policy(workdir: Path, size: str) -> Path:
    """A random Qwen2 of preset ``size`` (tiny | small | 100m) under ``workdir/models/size``."""
    from zerosearch.miniature.tiny import build_tiny_model

    out = Path(workdir) / "models" / size
    if not (out / "config.json").is_file():
        start = time.perf_counter()
        build_tiny_model(out, size=size)
        log(f"built random {size} policy in {time.perf_counter() - start:.1f} s at {out}")
    return out


def qa_rows(n: int, path: Path = QA_FILE) -> list[dict]:
    """The first ``n`` rows (question, golden_answers) of a real QA sample file."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                obj = json.loads(line)
                if not obj.get("question") or not obj.get("golden_answers"):
                    raise ValueError(f"{path}:{line_no}: needs 'question' and non-empty 'golden_answers'")
                rows.append(obj)
            if len(rows) == n:
                return rows
    raise ValueError(f"{path}: has {len(rows)} rows, {n} needed")


def search_format_response(question: str, answer: str) -> tuple[str, str, str]:
    """(first turn, observation, last turn) of a two-turn trajectory in the search format."""
    from zerosearch.prompts import format_observation

    query = " ".join(question.strip().rstrip("?").split()[:PRIME_QUERY_WORDS])
    first = f"<think> I should search. </think>\n<search> {query} </search>"
    last = f"<think> Found it. </think>\n<answer> {answer} </answer>"
    return first, format_observation(f"Doc 1: {answer}."), last


def primed_policy(workdir: Path) -> Path:
    """The ``PRIME_SIZE`` policy after ``PRIME_STEPS`` AdamW steps on search-format trajectories."""
    out = Path(workdir) / "models" / f"{PRIME_SIZE}-primed"
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zerosearch.prompts import make_prefix

    base = random_policy(workdir, PRIME_SIZE)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    rows = qa_rows(200)
    examples = []
    for row in rows:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": make_prefix(row["question"])}],
                                               add_generation_prompt=True, tokenize=False)
        first, obs, last = search_format_response(row["question"], row["golden_answers"][0])
        p_ids = tokenizer.encode(prompt, add_special_tokens=False)
        r_ids = tokenizer.encode(first + obs + last, add_special_tokens=False) + [tokenizer.eos_token_id]
        examples.append((p_ids[-PRIME_CONTEXT:], r_ids))
    torch.manual_seed(PRIME_SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRIME_LR)
    model.train()
    start = time.perf_counter()
    for step in range(PRIME_STEPS):
        batch = [examples[int(i)] for i in torch.randint(len(examples), (PRIME_BATCH,))]
        width = max(len(p) + len(r) for p, r in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (p, r) in enumerate(batch):
            seq = p + r
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, len(p): len(seq)] = torch.tensor(r)
            mask[i, : len(seq)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 20 == 0 or step == PRIME_STEPS - 1:
            log(f"priming the {PRIME_SIZE} policy: step {step + 1}/{PRIME_STEPS}, loss {loss.item():.3f}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log(f"primed {PRIME_SIZE} policy in {time.perf_counter() - start:.1f} s at {out}")
    return out
