#!/usr/bin/env bash
# GPU smoke run: 2 GRPO steps per model shape with the paper's per-GPU shapes, on the GPUs present,
# searching a simulation LLM served by vLLM; a table of measured peak memory per phase against the
# memory plan, seconds per phase, weight-sync time, the memory freed by the engine's sleep and the
# rollout/actor log-prob difference.
#
# Usage: bash scripts/gpu_smoke.sh [KEY VALUE ...]
#   SHAPES     model shapes from configs/models, built offline with random weights (default "0.5b 3b")
#   RUN_7B     1 (default) or 0: also the 7B shape, when the GPUs have >= 70 GiB for the trainer (its
#              rollout engine sleeps outside the rollout, as every cuda run's does; its CPU-offloaded
#              fp32 weights, gradients and AdamW states need about 39 GiB of host memory per GPU on
#              4 GPUs, 156 GiB on one: the plan prints it)
#   STEPS      training steps per shape (default 2)
#   TURNS      search rounds per trajectory, MAX_TURNS (default 2, the paper-era scripts)
#   SIMULATOR  simulation model folder (default: build the small tiny simulation model offline)
#   SIM_SHARE  share of GPU 0 the simulation server's vLLM takes (default 0.1); the plan gets the rest
#   PORT       simulation server port (default 6001)
#   OUT        work folder (default outputs/gpu_smoke)
# Per GPU, as the paper's run (64 prompts x 5 trajectories on 4 GPUs): 16 prompts x 5 = 80
# trajectories, 2048-token prompts, 4096-token responses of 500-token turns. Each shape first
# prints its memory plan (train_grpo.sh --plan); a run the plan refuses is recorded, not started.
# Writes OUT/smoke_table.md (scripts/gpu_smoke_report.py) and ends with "gpu_smoke: OK" when every
# shape ran its steps. Without a visible CUDA GPU it stops at once with exit code 2.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

RUN_7B=1
SHAPES="0.5b 3b" STEPS=2 TURNS=2 SIMULATOR="" SIM_SHARE=0.1 PORT=6001 OUT="$ROOT/outputs/gpu_smoke"
source "$ROOT/scripts/key_value_args.sh"
parse_key_values gpu_smoke "SHAPES RUN_7B STEPS TURNS SIMULATOR SIM_SHARE PORT OUT" "$@"
[[ ${#KV_REST[@]} -eq 0 ]] || { echo "gpu_smoke: takes no overrides after --" >&2; exit 2; }

no_gpu() {
    echo "gpu_smoke: no CUDA GPU visible ($1). This smoke run trains on GPUs; run it on a machine with" \
         "at least one (docs/gpu.md). To see what a GPU run would need, plan it anywhere:" \
         "bash train_grpo.sh --plan DEVICE cuda MODEL_PATH configs/models/qwen2.5-3b.json DATA_PATH x" >&2
    exit 2
}
command -v nvidia-smi > /dev/null 2>&1 || no_gpu "nvidia-smi not found"
nvidia-smi -L > /dev/null 2>&1 || no_gpu "nvidia-smi lists no GPU"
read -r NGPU GPU_GIB GPU_NAME < <("$PY" -c "
import torch
if not torch.cuda.is_available():
    print(0, 0, 'none')
else:
    p = torch.cuda.get_device_properties(0)
    print(torch.cuda.device_count(), f'{p.total_memory / 2**30:.1f}', p.name.replace(' ', '_'))
")
[[ "$NGPU" -ge 1 ]] || no_gpu "torch.cuda.is_available() is False"
CAP=$("$PY" -c "print(f'{$GPU_GIB * (1 - $SIM_SHARE):.1f}')")
if [[ "$RUN_7B" == 1 ]]; then
    if "$PY" -c "import sys; sys.exit(0 if $CAP >= 70 else 1)"; then SHAPES="$SHAPES 7b"
    else echo "gpu_smoke: RUN_7B 1 but only $CAP GiB per GPU for the trainer: 7b skipped" >&2; fi
fi
echo "gpu_smoke: $NGPU x $GPU_NAME ($GPU_GIB GiB; $CAP GiB for the trainer, $SIM_SHARE of GPU 0 for the simulator); shapes: $SHAPES"

mkdir -p "$OUT/logs" "$OUT/models"
TABLE="$OUT/smoke_table.md"
{ echo "# GPU smoke run, $(date -u +%Y-%m-%dT%H:%MZ)"; echo; echo "$NGPU x $GPU_NAME ($GPU_GIB GiB); command: bash scripts/gpu_smoke.sh $*"; echo; } > "$TABLE"
if [[ -z "$SIMULATOR" ]]; then
    SIMULATOR="$OUT/models/simulator"
    [[ -f "$SIMULATOR/config.json" ]] || "$PY" -m zerosearch.miniature.tiny --out "$SIMULATOR" --size small --kind simulation
fi
[[ -f "$OUT/data/train.parquet" ]] || "$PY" "$ROOT/scripts/data_process/qa_search.py" --out "$OUT/data"

cleanup() { for f in "$OUT"/logs/*.pid; do [[ -f "$f" ]] && kill "$(cat "$f")" 2>/dev/null || true; done; }
trap cleanup EXIT
bash "$ROOT/scripts/launch_simulation_server.sh" "$SIMULATOR" ENGINE vllm PORT "$PORT" LOG_DIR "$OUT/logs" \
    GPU_MEMORY_UTILIZATION "$SIM_SHARE"

# The trainer runs with the cuda device profile's defaults (verl/trainer/config/device/cuda.yaml:
# bf16 actor, reference and rollout, token-budget micro-batches, the engine asleep outside the
# rollout): the smoke measures what a user's run gets.
failed=0
for S in $SHAPES; do
    POLICY="$OUT/models/qwen2.5-$S"
    [[ -f "$POLICY/config.json" ]] || "$PY" -m zerosearch.miniature.tiny --shape "$ROOT/configs/models/qwen2.5-$S.json" --out "$POLICY"
    ARGS=(MODEL_PATH "$POLICY" DATA_PATH "$OUT/data" DEVICE cuda ROLLOUT_ENGINE vllm NUM_GPUS_PER_NODE "$NGPU"
          TRAIN_BATCH_SIZE $((16 * NGPU)) N_AGENT 5 MAX_TURNS "$TURNS" MAX_PROMPT_LENGTH 2048 MAX_RESPONSE_LENGTH 4096
          MAX_NEW_TOKENS 500 TOTAL_STEPS "$STEPS" SEARCH_MODE simulate_sft IP 127.0.0.1 PORT "$PORT"
          SIM_MODEL_NAME simulation SAVE_DIR "$OUT/ckpt" EXPERIMENT_NAME "smoke-$S" SAVE_FREQ -1
          LOGGER console,jsonl GPU_MEMORY_GIB "$CAP")
    EXTRA=(trainer.resume_mode=disable)
    echo "gpu_smoke: --- $S: memory plan"
    if ! bash "$ROOT/train_grpo.sh" --plan "${ARGS[@]}" -- "${EXTRA[@]}" | tee "$OUT/plan-$S.txt"; then
        { echo "### $S"; echo; echo "refused by the memory plan: $(tail -n 1 "$OUT/plan-$S.txt")"; echo; } >> "$TABLE"
        failed=1; continue
    fi
    echo "gpu_smoke: --- $S: $STEPS GRPO steps"
    rm -f "$OUT/ckpt/smoke-$S/logs/metrics.jsonl"
    if ! bash "$ROOT/train_grpo.sh" "${ARGS[@]}" -- "${EXTRA[@]}" > "$OUT/logs/train-$S.log" 2>&1; then
        echo "gpu_smoke: $S failed; last lines of $OUT/logs/train-$S.log:" >&2; tail -n 30 "$OUT/logs/train-$S.log" >&2
        { echo "### $S"; echo; echo "failed: see logs/train-$S.log"; echo; } >> "$TABLE"
        failed=1; continue
    fi
    "$PY" -m scripts.gpu_smoke_report --name "$S" --plan "$OUT/plan-$S.txt" \
        --metrics "$OUT/ckpt/smoke-$S/logs/metrics.jsonl" --out "$TABLE"
done
echo "gpu_smoke: table in $TABLE"
[[ "$failed" == 0 ]] || { echo "gpu_smoke: FAILED (see the table)" >&2; exit 1; }
echo "gpu_smoke: OK"
