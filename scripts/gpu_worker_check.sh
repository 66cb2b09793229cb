#!/usr/bin/env bash
# The GPU worker check (scripts/gpu_worker_check.py) on a machine that has PyTorch and transformers
# but not the rest of this project's environment (no vLLM, no Ray) and no network: it adds the
# pure-Python packages the worker needs from a folder of wheels, builds random-weight models of
# real shapes offline and runs the actor worker through a step's phases against the memory plan.
#
# Usage: bash scripts/gpu_worker_check.sh [KEY VALUE ...] [-- HYDRA_OVERRIDE ...]
#   SHAPES   model shapes from configs/models (default "0.5b 3b")
#   DEVICE   cuda (default) or cpu (the same check on the CPU, for trying this script anywhere)
#   ROWS     trajectories per log-prob and update pass, a multiple of 4 (default 8)
#   PROMPT   prompt tokens per trajectory (default 1024)
#   RESPONSE response tokens per trajectory (default 3072; with ROWS 8 the micro-batches fill the
#            cuda profile's token budgets: 16,384 per update micro-batch, 32,768 per log-prob pass)
#   OUT      where worker_check.md and worker_check.json go (default outputs/gpu_worker_check)
#   MODELS   where the models are built (default OUT/models; 6 GiB for 3b in bfloat16)
#   WHEELS   folder of wheels for what python lacks (default: .whl in the repository); made on a
#            machine with network by: bash scripts/gpu_worker_check.sh --fetch-wheels DIR
#   PY       the python to use (default: the repository's .venv, else python3)
# Exit 0 when every shape ran and passed, 1 when one failed or the plan refused it, 2 on bad
# arguments or when DEVICE cuda finds no GPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# omegaconf and hydra (with hydra's parser runtime) are what the worker path needs beyond PyTorch,
# transformers, numpy, safetensors, tokenizers, pyyaml and psutil; all three are pure Python.
NEEDED_WHEELS=("hydra-core==1.3.8" "omegaconf==2.3.*")
NEEDED_SDISTS=("antlr4-python3-runtime==4.9.3")  # published as a source archive only: built into a wheel

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    [[ $# -eq 2 ]] || { echo "gpu_worker_check: --fetch-wheels needs one folder" >&2; exit 2; }
    mkdir -p "$2"
    python3 -m pip download --no-deps --only-binary=:all: -d "$2" "${NEEDED_WHEELS[@]}"
    python3 -m pip wheel --no-deps -w "$2" "${NEEDED_SDISTS[@]}"
    echo "gpu_worker_check: wheels in $2"; ls "$2"; exit 0
fi

if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
SHAPES="0.5b 3b" DEVICE=cuda ROWS=8 PROMPT=1024 RESPONSE=3072 OUT="$ROOT/outputs/gpu_worker_check" MODELS=""
WHEELS="$ROOT/.whl"
source "$ROOT/scripts/key_value_args.sh"
parse_key_values gpu_worker_check "SHAPES DEVICE ROWS PROMPT RESPONSE OUT MODELS WHEELS PY" "$@"
MODELS="${MODELS:-$OUT/models}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c "import omegaconf, hydra" > /dev/null 2>&1; then
    shopt -s nullglob; wheels=("$WHEELS"/*.whl); shopt -u nullglob
    [[ ${#wheels[@]} -gt 0 ]] || { echo "gpu_worker_check: $PY lacks omegaconf/hydra and $WHEELS holds no wheels;" \
        "make them where there is network: bash scripts/gpu_worker_check.sh --fetch-wheels DIR" >&2; exit 2; }
    SITE="$(mktemp -d -t gpu_worker_check_site.XXXXXX)"  # not under OUT: that holds the results alone
    trap 'rm -rf "$SITE"' EXIT
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "${wheels[@]}"
    export PYTHONPATH="$PYTHONPATH:$SITE"
fi
if [[ "$DEVICE" == cuda ]] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_worker_check: DEVICE cuda but torch sees no CUDA GPU" >&2; exit 2
fi

mkdir -p "$OUT" "$MODELS"
FOLDERS=()
for S in $SHAPES; do
    SHAPE="$ROOT/configs/models/qwen2.5-$S.json"
    [[ -f "$SHAPE" ]] || { echo "gpu_worker_check: no shape file $SHAPE" >&2; exit 2; }
    [[ -f "$MODELS/qwen2.5-$S/config.json" ]] || "$PY" -m zerosearch.miniature.tiny --shape "$SHAPE" --out "$MODELS/qwen2.5-$S"
    FOLDERS+=("$MODELS/qwen2.5-$S")
done
"$PY" -m scripts.gpu_worker_check --models "${FOLDERS[@]}" --out "$OUT" --device "$DEVICE" --rows "$ROWS" \
    --prompt-length "$PROMPT" --response-length "$RESPONSE" -- "${KV_REST[@]}"
