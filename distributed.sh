#!/usr/bin/env bash
# Runs a distributed Locust load test: one master and the config's expect-workers workers, all on
# this machine. Stops exactly the processes it started on exit, Ctrl-C or TERM.
set -euo pipefail

usage() {
    cat >&2 <<'TXT'
usage: ./distributed.sh <config> <model_name> [server]

  config      a Locust config file, e.g. configs/low.conf or configs/high.conf
  model_name  the model to load-test, e.g. resnet50_onnx
  server      triton | litserve (default: $SERVER, then $INFERENCE_SERVER)

environment:
  HOST          server URL (default http://127.0.0.1:8000 for triton, http://127.0.0.1:8001 for litserve)
  RESULTS_DIR   where CSV and HTML go (default results/<server>)
  WEB_UI=true   serve the web UI on the config's web port (8089) instead of running headless
  MASTER_PORT   master port (default: a free one)
  RUN_TIME      override the config's run-time (e.g. 30s)
  LOCUST        the locust command (default: .venv/bin/locust when present, else locust)
  DEBUG_REQUESTS=true  log every request and response
TXT
    exit 2
}

[[ $# -ge 2 && $# -le 3 ]] || usage
config=$1
model=$2
server=${3:-${SERVER:-${INFERENCE_SERVER:-}}}
[[ -f $config ]] || { echo "distributed.sh: config file $config does not exist" >&2; exit 2; }
[[ -n $model ]] || usage
case $server in
    triton) default_host=http://127.0.0.1:8000 ;;
    litserve) default_host=http://127.0.0.1:8001 ;;
    "") echo "distributed.sh: no server given: pass triton or litserve as the third argument or set SERVER" >&2; exit 2 ;;
    *) echo "distributed.sh: unknown server '$server': choose triton or litserve" >&2; exit 2 ;;
esac
host=${HOST:-$default_host}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ -z ${LOCUST:-} ]]; then
    if [[ -x $here/.venv/bin/locust ]]; then LOCUST=$here/.venv/bin/locust; else LOCUST=locust; fi
fi
python=$(dirname "$LOCUST")/python
[[ -x $python ]] || python=python3

conf_value() { # the value of a key in the config file, or empty
    sed -n -E "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*([^#]*[^[:space:]#]).*/\1/p" "$config" | tail -n 1
}
workers=$(conf_value expect-workers)
workers=${workers:-1}
[[ $workers =~ ^[0-9]+$ && $workers -ge 1 ]] || { echo "distributed.sh: expect-workers must be a positive integer" >&2; exit 2; }
class=$(conf_value class-name)
results=${RESULTS_DIR:-results/$server}
mkdir -p "$results"
prefix="$results/$(basename "${config%.*}")"
port=${MASTER_PORT:-$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

cat <<TXT
==> locust-inference distributed run
    config   $config
    host     $host
    model    $model
    server   $server
    workers  $workers
    class    ${class:-(all)}
    run time ${RUN_TIME:-$(conf_value run-time)}
    results  $results/  (${prefix}_stats.csv, ${prefix}.html)
TXT

pids=()
# shellcheck disable=SC2317  # invoked by trap
cleanup() {
    trap - EXIT INT TERM
    local alive=()
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null && alive+=("$pid")
    done
    if ((${#alive[@]})); then
        kill -TERM "${alive[@]}" 2>/dev/null || true
        for _ in $(seq 50); do
            local still=()
            for pid in "${alive[@]}"; do kill -0 "$pid" 2>/dev/null && still+=("$pid"); done
            ((${#still[@]})) || break
            sleep 0.1
        done
        for pid in "${alive[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    fi
}
# shellcheck disable=SC2317  # invoked by trap
on_signal() {
    echo "distributed.sh: interrupted, stopping master and workers" >&2
    cleanup
    exit 130
}
trap cleanup EXIT
trap on_signal INT TERM

common=(--config "$config" --host "$host" --server "$server" --model-name "$model")
master_extra=()
[[ -n ${RUN_TIME:-} ]] && master_extra+=(--run-time "$RUN_TIME")
mode=(--headless)
if [[ ${WEB_UI:-false} == true ]]; then
    mode=(--autostart --autoquit 10)
    echo "    web UI   http://127.0.0.1:$(conf_value web-port || echo 8089)"
fi

"$LOCUST" "${common[@]}" --master --master-bind-port "$port" --expect-workers "$workers" "${mode[@]}" \
    "${master_extra[@]}" --csv "$prefix" --html "$prefix.html" &
master=$!
pids+=("$master")
for _ in $(seq "$workers"); do
    "$LOCUST" "${common[@]}" --worker --master-host 127.0.0.1 --master-port "$port" &
    pids+=("$!")
done

status=0
declare -A finished=()
while true; do
    if ! kill -0 "$master" 2>/dev/null; then
        wait "$master" || status=$?
        break
    fi
    for pid in "${pids[@]:1}"; do
        [[ -n ${finished[$pid]:-} ]] && continue
        kill -0 "$pid" 2>/dev/null && continue
        code=0
        wait "$pid" || code=$?
        finished[$pid]=$code
        if ((code != 0)); then
            echo "distributed.sh: worker $pid exited with status $code; stopping the run" >&2
            cleanup
            exit 1
        fi
    done
    sleep 0.2
done
# workers leave by themselves when the master quits; give them a moment, then clean up
for pid in "${pids[@]:1}"; do
    for _ in $(seq 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
done
echo "==> results in $results/ (exit status $status)"
exit "$status"
