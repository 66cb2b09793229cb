#!/usr/bin/env bash
# Start the local retrieval server, wait until /health answers, print the client settings, and
# stay in the foreground until the server exits (Ctrl-C stops it).
#
# Usage: scripts/launch_retrieval_server.sh CORPUS [PORT] [HOST]
#   CORPUS  jsonl corpus ({id,title,text} or Search-R1 {id,contents}), e.g. data/corpus/wiki_paragraphs.jsonl
#   PORT    default 6002
#   HOST    default 127.0.0.1 (loopback only; the server has no authentication)
# Environment:
#   PYTHON                     interpreter (default: .venv/bin/python when present, else python3)
#   RETRIEVAL_SERVER_ARGS      extra server flags, e.g. "--method dense --model /models/e5 --index-cache .cache"
#   RETRIEVAL_STARTUP_TIMEOUT  seconds to wait for /health (default 600)
set -euo pipefail

if [[ $# -lt 1 || $# -gt 3 ]]; then
    echo "usage: $0 CORPUS [PORT] [HOST]" >&2
    exit 2
fi
CORPUS=$1
PORT=${2:-6002}
HOST=${3:-127.0.0.1}
TIMEOUT=${RETRIEVAL_STARTUP_TIMEOUT:-600}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
if [[ ! -f "$CORPUS" ]]; then
    echo "error: corpus file '$CORPUS' not found" >&2
    exit 2
fi
# The health probe connects to loopback when the server listens on every address.
PROBE_HOST=$HOST
if [[ "$HOST" == "0.0.0.0" ]]; then PROBE_HOST=127.0.0.1; fi
if [[ "$HOST" == "::" ]]; then PROBE_HOST=::1; fi

# shellcheck disable=SC2086  # RETRIEVAL_SERVER_ARGS is a list of flags on purpose
"$PYTHON" -m zerosearch.retrieval.server --corpus "$CORPUS" --port "$PORT" --host "$HOST" \
    ${RETRIEVAL_SERVER_ARGS:-} &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true' INT TERM EXIT

if ! "$PYTHON" -m zerosearch.retrieval.health --host "$PROBE_HOST" --port "$PORT" --timeout "$TIMEOUT" \
        --pid "$SERVER_PID" >/dev/null; then
    echo "error: retrieval server did not become healthy (see the messages above)" >&2
    exit 1
fi
echo "retrieval server ready (pid $SERVER_PID). Client settings:"
echo "  retriever.wiki.host=$PROBE_HOST retriever.wiki.port=$PORT"
wait "$SERVER_PID"
