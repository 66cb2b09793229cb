#!/usr/bin/env bash
# GPU smoke test: a short GRPO run on one GPU with vLLM rollouts and FSDP, searching a simulation
# LLM served by vLLM on the same GPU (falls back to the local retrieval server with SEARCH wiki).
#
# Usage: bash scripts/gpu_smoke.sh [KEY VALUE ...]
#   POLICY     policy model folder (default: build the ~100M tiny policy offline)
#   SIMULATOR  simulation model folder (default: build the tiny simulation model offline)
#   SEARCH     simulate_sft (default) or wiki
#   STEPS      training steps (default 3)
#   OUT        work folder (default outputs/gpu_smoke)
# Prints the trainer's per-step metrics and ends with "gpu_smoke: OK" when every step logged.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
POLICY="" SIMULATOR="" SEARCH=simulate_sft STEPS=3 OUT="$ROOT/outputs/gpu_smoke"
while [[ $# -gt 0 ]]; do
    case "$1" in
        POLICY|SIMULATOR|SEARCH|STEPS|OUT) [[ $# -ge 2 ]] || { echo "gpu_smoke: $1 needs a value" >&2; exit 2; }
                                           printf -v "$1" '%s' "$2"; shift 2 ;;
        *) echo "gpu_smoke: unknown key '$1' (valid: POLICY SIMULATOR SEARCH STEPS OUT)" >&2; exit 2 ;;
    esac
done
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_smoke: no CUDA device visible')"
mkdir -p "$OUT"
if [[ -z "$POLICY" ]]; then POLICY="$OUT/policy"; [[ -f "$POLICY/config.json" ]] || "$PY" -m zerosearch.tiny --out "$POLICY" --size 100m --kind policy; fi
if [[ -z "$SIMULATOR" ]]; then SIMULATOR="$OUT/simulator"; [[ -f "$SIMULATOR/config.json" ]] || "$PY" -m zerosearch.tiny --out "$SIMULATOR" --size small --kind simulation; fi
[[ -f "$OUT/data/train.parquet" ]] || "$PY" "$ROOT/scripts/data_process/qa_search.py" --out "$OUT/data"

cleanup() { for f in "$OUT"/logs/*.pid; do [[ -f "$f" ]] && kill "$(cat "$f")" 2>/dev/null || true; done; }
trap cleanup EXIT
mkdir -p "$OUT/logs"
if [[ "$SEARCH" == wiki ]]; then
    "$PY" -m zerosearch.retrieval.server --corpus "$ROOT/data/corpus/wiki_paragraphs.jsonl" --port 6002 > "$OUT/logs/retrieval.log" 2>&1 &
    echo $! > "$OUT/logs/retrieval.pid"
    SEARCH_KEYS=(SEARCH_MODE wiki RETRIEVER_PORT 6002)
else
    bash "$ROOT/scripts/launch_simulation_server.sh" "$SIMULATOR" ENGINE vllm PORT 6001 LOG_DIR "$OUT/logs" GPU_MEMORY_UTILIZATION 0.2
    SEARCH_KEYS=(SEARCH_MODE simulate_sft IP 127.0.0.1 PORT 6001 SIM_MODEL_NAME simulation)
fi
bash "$ROOT/train_grpo.sh" MODEL_PATH "$POLICY" DATA_PATH "$OUT/data" TOTAL_STEPS "$STEPS" DEVICE cuda \
    ROLLOUT_ENGINE vllm NUM_GPUS_PER_NODE 1 TRAIN_BATCH_SIZE 8 N_AGENT 4 MAX_TURNS 2 TOPK 3 \
    MAX_NEW_TOKENS 64 MAX_RESPONSE_LENGTH 512 MAX_PROMPT_LENGTH 512 SEARCH_ENGINE wiki \
    SAVE_DIR "$OUT/ckpt" SAVE_FREQ "$STEPS" EXPERIMENT_NAME smoke "${SEARCH_KEYS[@]}" \
    -- actor_rollout_ref.rollout.gpu_memory_utilization=0.3 trainer.resume_mode=disable
n=$(wc -l < "$OUT/ckpt/smoke/logs/metrics.jsonl")
[[ "$n" -ge "$STEPS" ]] || { echo "gpu_smoke: expected $STEPS logged steps, found $n" >&2; exit 1; }
echo "gpu_smoke: OK ($n steps logged in $OUT/ckpt/smoke/logs/metrics.jsonl)"
