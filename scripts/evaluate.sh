#!/usr/bin/env bash
# Evaluate a checkpoint on QA benchmarks with a search backend. Named KEY VALUE arguments in any
# order (see --help); everything after -- is passed as Hydra overrides of configs/zerosearch_trainer.yaml.
# No defaults here: a checkpoint of a training run is evaluated with the run's saved task settings
# (lengths, turns, topk, ...); TOPK, MAX_TURNS or an override change them, TRAIN_CONFIG stock ignores them.
# Example: bash scripts/evaluate.sh MODEL_PATH checkpoints/ZeroSearch/run/exports/global_step_200 \
#              DATA_PATH data/qa/nq.jsonl,data/qa/bamboogle.jsonl SEARCH_ENGINE wiki \
#              RETRIEVER_PORT 6002 ENGINE hf DEVICE cpu OUT eval_results/run
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m zerosearch.evaluation.keys "$@"
