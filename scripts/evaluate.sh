#!/usr/bin/env bash
# Evaluate a checkpoint on QA benchmarks with a search backend. Named KEY VALUE arguments in any
# order (see --help); everything after -- is passed as Hydra overrides of configs/zerosearch_trainer.yaml.
# Example: bash scripts/evaluate.sh MODEL_PATH checkpoints/ZeroSearch/run/global_step_200/actor/huggingface \
#              DATA_PATH data/qa/nq.jsonl,data/qa/bamboogle.jsonl SEARCH_ENGINE wiki TOPK 5 MAX_TURNS 2 \
#              RETRIEVER_PORT 6002 ENGINE hf DEVICE cpu OUT eval_results/run
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m zerosearch.evaluation.keys "$@"
