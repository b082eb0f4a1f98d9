#!/usr/bin/env bash
# Start the model server on a registered model, send one V1 and one V2 forecast
# request, print the answers, stop the server. Used by `make run`.
#   scripts/serve-demo.sh [MODEL_REF] [PORT]
set -euo pipefail
ref=${1:-models:/m3-monthly@challenger}
port=${2:-8080}
name=${ref#models:/}; name=${name%%[@/]*}
url="http://127.0.0.1:${port}"
log=$(mktemp -t tsops-serve.XXXXXX.log)

tsops serve --model "$ref" --http_port "$port" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT

for _ in $(seq 1 120); do
  if curl -fsS "$url/v2/models/$name/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then cat "$log" >&2; echo "server exited" >&2; exit 1; fi
  sleep 0.5
done
curl -fsS "$url/v2/models/$name/ready" >/dev/null || { cat "$log" >&2; exit 1; }
series=$(tsops predict "$name" --alias challenger --h 1 2>/dev/null | awk 'NR==3 {print $1}')

echo "server on $url ($ref, log $log)"
echo
echo "V1: POST $url/v1/models/$name:predict"
curl -fsS -H 'Content-Type: application/json' "$url/v1/models/$name:predict" -d @- <<JSON
{"instances": [{"unique_id": "$series"}], "parameters": {"h": 6, "level": [80]}}
JSON
echo; echo
echo "V2: POST $url/v2/models/$name/infer"
curl -fsS -H 'Content-Type: application/json' "$url/v2/models/$name/infer" -d @- <<JSON
{"inputs": [{"name": "unique_id", "datatype": "BYTES", "shape": [1], "data": ["$series"]}],
 "parameters": {"h": 3}}
JSON
echo; echo
echo "server stopped; start it yourself with: tsops serve --model $ref --http_port $port"
