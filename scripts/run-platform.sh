#!/usr/bin/env bash
# The main job on the data platform, step by step (`make run-platform`):
#   servers -> series in PostgreSQL -> pipeline from the sql source -> registry on an
#   mlflow server over PostgreSQL -> Feast materialisation into Redis -> a new actual
#   arrives in the database -> a served forecast that starts from it, logged to PostgreSQL.
#   scripts/run-platform.sh [MODEL] [PORT]
# Everything it writes is under .platform/ (git ignores it): the servers' data (kept, so
# the registry remembers its versions across runs) and project/, a copy of the model
# that reads its series from the database, remade on every run. `make run`'s files, its
# SQLite registry and features/ are not touched. The servers are stopped at the end.
set -euo pipefail
model=${1:-m3-monthly}
port=${2:-8080}
repo=$(pwd)
platform=$repo/.platform
project=$platform/project
seed=$platform/seed

step() { printf '\n== %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }  # the command, as make prints it, then its output

test -f "models/$model/model.yaml" || { echo "no models/$model/model.yaml; run from the repository root" >&2; exit 1; }

step "1. servers: PostgreSQL, Redis and an mlflow server whose backend store is PostgreSQL"
show tsops platform up --mlflow --dir .platform
# shellcheck source=/dev/null
source "$platform/env"
server=""
finish() {  # on failure or Ctrl-C too: no server left running
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  tsops platform down --dir "$platform" >/dev/null 2>&1 || true
}
trap finish EXIT
# psql takes libpq's URL (no SQLAlchemy driver name) and need not chat about DROP IF EXISTS
series_db=${TSOPS_SERIES_DATABASE_URL/+psycopg/}
log_db=${TSOPS_FORECAST_LOG_URL/+psycopg/}
export PGOPTIONS="-c client_min_messages=warning"
# shellcheck disable=SC2016  # the variable's name is printed, as a user would type it
sql() { printf '$ psql "$TSOPS_SERIES_DATABASE_URL" -c "%s"\n' "$1"; psql -q "$series_db" -v ON_ERROR_STOP=1 -c "$1"; }

step "2. the built-in series of $model into PostgreSQL (table series); the last month held back"
rm -rf "$seed" && mkdir -p "$seed/models/$model"
cp "models/$model/model.yaml" "$seed/models/$model/"
show tsops ingest "$model" --root .platform/seed
show tsops platform load-series ".platform/seed/data/$model/series.parquet" --table series --replace
sql "DROP TABLE IF EXISTS arriving; CREATE TABLE arriving AS SELECT * FROM series WHERE ds = (SELECT max(ds) FROM series); DELETE FROM series WHERE ds = (SELECT max(ds) FROM arriving)"
sql "SELECT count(DISTINCT unique_id) AS series, count(*) AS rows, max(ds)::date AS last_month FROM series"

step "3. the pipeline on a copy of $model that reads the database (.platform/project)"
rm -rf "$project" && mkdir -p "$project/models/$model" "$project/features"
# the same model.yaml with its source block replaced (the URL stays in the environment)
awk '/^source:/ { print "source:\n  kind: sql\n  table: series        # URL: $TSOPS_SERIES_DATABASE_URL"; skip = 1; next }
     skip && /^[^ #]/ { skip = 0 }
     !skip' "models/$model/model.yaml" >"$project/models/$model/model.yaml"
cp features/feature_store.yaml features/series.py "$project/features/"
printf 'models:\n  - %s\n' "$model" >"$project/params.yaml"
cd "$project"
show sed -n '/^source:/,/^freq:/p' "models/$model/model.yaml"
for stage in ingest validate backtest train evaluate gate; do
  show tsops "$stage" "$model"
done

step "4. the registry: tsops register over HTTP to the mlflow server (MLFLOW_TRACKING_URI=$MLFLOW_TRACKING_URI)"
show tsops register "$model"
show tsops versions "$model"

step "5. Feast: the latest observations and gbm features of every series into Redis"
show tsops features materialize "$model"

step "6. a new actual arrives in the database, and only it is read"
first=$(psql -tA "$series_db" -c "SELECT min(unique_id) FROM arriving")
other=$(psql -tA "$series_db" -c "SELECT min(unique_id) FROM arriving WHERE unique_id > '$first'")
sql "INSERT INTO series SELECT * FROM arriving WHERE unique_id = '$first'"
show tsops ingest "$model"
show tsops features materialize "$model"
show tsops features show "$model" --series "$first" --series "$other"

step "7. the model server: models:/$model@challenger from the mlflow server, actuals from the feature store, forecast log in PostgreSQL"
url="http://127.0.0.1:$port"
printf '$ tsops serve --model models:/%s@challenger --feature_store features --http_port %s &\n' "$model" "$port"
tsops serve --model "models:/$model@challenger" --feature_store features --http_port "$port" \
  >serve.log 2>&1 &
server=$!
for _ in $(seq 1 240); do
  if curl -fsS "$url/v2/models/$model/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then cat serve.log >&2; echo "server exited" >&2; exit 1; fi
  sleep 0.5
done
curl -fsS "$url/v2/models/$model/ready" >/dev/null || { cat serve.log >&2; exit 1; }
echo
echo "V1: POST $url/v1/models/$model:predict   (only series names: no history in the request)"
request="{\"instances\": [{\"unique_id\": \"$first\"}, {\"unique_id\": \"$other\"}], \"parameters\": {\"h\": 3}}"
echo "$request"
# the answer, its numbers cut to one decimal and one line per series
curl -fsS -H 'Content-Type: application/json' "$url/v1/models/$model:predict" -d "$request" |
  python3 -m json.tool --compact | sed -E 's/([0-9]+\.[0-9])[0-9]+/\1/g; s/\},\{"unique_id"/},\n  {"unique_id"/g'
echo
kill "$server" && wait "$server" 2>/dev/null || true  # stopping flushes the forecast log
server=""

step "8. the forecast log, one table for every replica"
# shellcheck disable=SC2016  # the variable's name is printed, as a user would type it
printf '$ psql "$TSOPS_FORECAST_LOG_URL" -c "%s"\n' "SELECT ... FROM forecast_log"
psql -q "$log_db" -c "SELECT registered_model, model_version, unique_id, cutoff::date, ds[1]::date AS first_ds, round(mean[1]::numeric, 1) AS first_mean FROM forecast_log ORDER BY served_at DESC, unique_id LIMIT 2"

step "9. stop the servers (their data stays in .platform/)"
cd "$repo"
trap - EXIT
show tsops platform down --dir .platform

echo
echo "Next:"
echo "  tsops platform up --mlflow && source .platform/env   the servers again, same data and ports"
echo "  open \$MLFLOW_TRACKING_URI in a browser               the mlflow server's UI: runs, versions, aliases"
printf '  %-51s  %s\n' "cd .platform/project && tsops versions $model" "the versions registered on the server"
echo "  rm -rf .platform                                     start afresh (after tsops platform down)"
