#!/usr/bin/env bash
# Runs a distributed Locust load test. By default one master and the config's expect-workers workers, all
# on this machine; ROLE=master runs only the master (for workers on other machines), ROLE=worker only
# workers that join a master elsewhere. Stops exactly the processes it started on exit, Ctrl-C or TERM.
set -euo pipefail

usage() {
    cat >&2 <<'TXT'
usage: ./distributed.sh <config> <model_name> [server]
       ROLE=master [MASTER_BIND=addr] [MASTER_PORT=port] ./distributed.sh <config> <model_name> [server]
       ROLE=worker MASTER_HOST=addr [MASTER_PORT=port] [WORKERS=N] ./distributed.sh <config> <model_name> [server]

  config      a Locust config file, e.g. configs/low.conf or configs/high.conf
  model_name  the model to load-test, e.g. resnet50_onnx
  server      triton | litserve (default: $SERVER, then $INFERENCE_SERVER)

roles (ROLE):
  (unset)     master and the config's expect-workers workers, all on this machine
  master      only the master: waits for expect-workers workers from other machines, writes all results
  worker      WORKERS workers (default 1) that join the master at MASTER_HOST; they stop when it ends
              (within 60 s when it disappears). Exit status 1, in one line, when the master cannot be
              reached within MASTER_WAIT seconds (default 60)

environment:
  HOST          server URL as seen from this machine (default http://127.0.0.1:8000 for triton,
                http://127.0.0.1:8001 for litserve); set it on every machine
  RESULTS_DIR   where CSV and HTML go (default results/<server>; not used by workers)
  WEB_UI=true   serve the web UI on the config's web port (8089) instead of running headless
  MASTER_PORT   master port (default: a free one; 5557 with ROLE=master or worker)
  MASTER_BIND   ROLE=master: the address the master listens on (default: the config's master-bind-host);
                keep it on a private network: the port has no authentication
  RUN_TIME      override the config's run-time (e.g. 30s)
  LOCUST        the locust command (default: .venv/bin/locust when present, else locust)
  DEBUG_REQUESTS=true  log every request and response
  Auth headers (LOCUST_HEADER, --header-file in the config, INFERENCE_AUTH_TOKEN) are read by each
  process from its own machine; the master never sends them to workers.
TXT
    exit 2
}

role=${ROLE:-}
case $role in
    "" | master | worker) ;;
    *) echo "distributed.sh: unknown ROLE '$role': choose master or worker, or leave it unset for both here" >&2; exit 2 ;;
esac
[[ $# -ge 2 && $# -le 3 ]] || usage
config=$1
model=$2
server=${3:-${SERVER:-${INFERENCE_SERVER:-}}}
[[ -f $config ]] || { echo "distributed.sh: config file $config does not exist" >&2; exit 2; }
[[ -n $model ]] || usage
# The default hosts are HOSTS in python/locust_inference/defaults.py (importing the package to read them
# would load Locust and the extension first): change them together.
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
# the python beside locust (a bare "locust" is looked up in PATH: dirname would say ".", and ./python in this
# repository is a folder)
python=$(dirname "$(command -v "$LOCUST" || echo "$LOCUST")")/python
[[ -f $python && -x $python ]] || python=python3

conf_value() { # the value of a key in the config file, or empty
    sed -n -E "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*([^#]*[^[:space:]#]).*/\1/p" "$config" | tail -n 1
}
expected=$(conf_value expect-workers)
expected=${expected:-1}
[[ $expected =~ ^[0-9]+$ && $expected -ge 1 ]] || { echo "distributed.sh: expect-workers must be a positive integer" >&2; exit 2; }
class=$(conf_value class-name)
results=${RESULTS_DIR:-results/$server}
prefix="$results/$(basename "${config%.*}")"
local_workers=$expected # the workers started on this machine
master_host=127.0.0.1
case $role in
    "")
        port=${MASTER_PORT:-$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
        ;;
    master)
        port=${MASTER_PORT:-5557}
        local_workers=0
        ;;
    worker)
        port=${MASTER_PORT:-5557}
        master_host=${MASTER_HOST:-}
        [[ -n $master_host ]] || { echo "distributed.sh: ROLE=worker needs MASTER_HOST, the master's address" >&2; exit 2; }
        local_workers=${WORKERS:-1}
        [[ $local_workers =~ ^[0-9]+$ && $local_workers -ge 1 ]] ||
            { echo "distributed.sh: WORKERS must be a positive integer, got '$local_workers'" >&2; exit 2; }
        master_wait=${MASTER_WAIT:-60}
        [[ $master_wait =~ ^[0-9]+$ && $master_wait -ge 1 ]] ||
            { echo "distributed.sh: MASTER_WAIT must be a positive whole number of seconds, got '$master_wait'" >&2; exit 2; }
        ;;
esac
[[ $port =~ ^[0-9]+$ && $port -ge 1 && $port -le 65535 ]] ||
    { echo "distributed.sh: MASTER_PORT must be a port number (1-65535), got '$port'" >&2; exit 2; }

if [[ $role == worker ]]; then
    # Locust's worker retries an absent master for 5 minutes, quietly at first: check that the master's
    # port answers before starting any. Nothing listening, no route, an unknown name: one line, exit 1.
    "$python" -c '
import socket, sys, time
host, port, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + wait
while True:
    try:
        socket.create_connection((host, port), timeout=max(0.2, min(2.0, deadline - time.monotonic()))).close()
        break
    except OSError as err:
        if time.monotonic() + 0.5 >= deadline:
            reason = err.strerror or str(err) or type(err).__name__
            sys.exit(
                f"distributed.sh: cannot reach the master at {host}:{port} within {wait:g} s ({reason}); "
                "start it first (ROLE=master) or fix MASTER_HOST/MASTER_PORT"
            )
        time.sleep(0.5)
' "$master_host" "$port" "$master_wait" || exit 1
fi

cat <<TXT
==> locust-inference distributed run${role:+ (role: $role)}
    config   $config
    host     $host
    model    $model
    server   $server
    class    ${class:-(all)}
TXT
case $role in
    "") echo "    workers  $expected" ;;
    master) echo "    workers  $expected, from other machines (master port $port)" ;;
    worker) echo "    workers  $local_workers here, joining the master at $master_host:$port" ;;
esac
if [[ $role != worker ]]; then
    mkdir -p "$results"
    echo "    run time ${RUN_TIME:-$(conf_value run-time)}"
    echo "    results  $results/  (${prefix}_stats.csv, ${prefix}.html)"
fi

case $role in
    "") what="master and workers" ;;
    master) what=master ;;
    worker) what=workers ;;
esac
# The processes started here. Bash reaps a child as soon as it exits, so its id is free for anyone at once:
# a child is still ours only while /proc shows it running, as a child of this shell, with the start time it
# had at launch. Every probe and signal checks that first, and an id that `wait` has collected is dropped
# from `started`, never looked at again. (What is left: the child ending, and its id being taken again, in
# the instant between that check and the signal, which needs the kernel to go through every other id first.)
pids=()
declare -A started=() # pid -> its start time (field 22 of /proc/PID/stat), for those not yet waited for
stat=()
read_stat() { # the fields of /proc/$1/stat after the command name into $stat: [0] state, [1] parent, [19] start time
    local line
    { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
    read -r -a stat <<<"${line##*) }"
}
launched() { # records child $1 just started with &
    pids+=("$1")
    if read_stat "$1" && [[ ${stat[1]} == "$$" ]]; then started[$1]=${stat[19]}; fi
}
ours() { # whether child $1 still runs, and is still the process started as $1
    [[ -n ${started[$1]:-} ]] && read_stat "$1" &&
        [[ ${stat[0]} != Z && ${stat[1]} == "$$" && ${stat[19]} == "${started[$1]}" ]]
}
collected() { # child $1 was waited for: its id may belong to another process from now on
    unset "started[$1]"
}
signal_ours() { # signal $1 to each of the other arguments that is still ours
    local sig=$1 pid
    shift
    for pid; do
        if ours "$pid"; then kill "-$sig" "$pid" 2>/dev/null || true; fi
    done
}
# shellcheck disable=SC2317  # invoked by trap
cleanup() {
    trap - EXIT INT TERM
    local pid alive=()
    for pid in "${pids[@]}"; do
        if ours "$pid"; then alive+=("$pid"); fi
    done
    ((${#alive[@]})) || return 0
    signal_ours TERM "${alive[@]}"
    for _ in $(seq 50); do
        local still=()
        for pid in "${alive[@]}"; do
            if ours "$pid"; then still+=("$pid"); fi
        done
        alive=("${still[@]}")
        ((${#alive[@]})) || return 0
        sleep 0.1
    done
    signal_ours KILL "${alive[@]}" # only those still ours after the grace period
}
# shellcheck disable=SC2317  # invoked by trap
on_signal() {
    echo "distributed.sh: interrupted, stopping $what" >&2
    cleanup
    exit 130
}
trap cleanup EXIT
trap on_signal INT TERM

common=(--config "$config" --host "$host" --server "$server" --model-name "$model")
master=
if [[ $role != worker ]]; then
    master_extra=()
    [[ -n ${RUN_TIME:-} ]] && master_extra+=(--run-time "$RUN_TIME")
    [[ $role == master && -n ${MASTER_BIND:-} ]] && master_extra+=(--master-bind-host "$MASTER_BIND")
    mode=(--headless)
    if [[ ${WEB_UI:-false} == true ]]; then
        mode=(--autostart --autoquit 10)
        echo "    web UI   http://127.0.0.1:$(conf_value web-port || echo 8089)"
    fi
    "$LOCUST" "${common[@]}" --master --master-bind-port "$port" --expect-workers "$expected" "${mode[@]}" \
        "${master_extra[@]}" --csv "$prefix" --html "$prefix.html" &
    master=$!
    launched "$master"
fi
for _ in $(seq "$local_workers"); do
    "$LOCUST" "${common[@]}" --worker --master-host "$master_host" --master-port "$port" &
    launched "$!"
done

status=0
declare -A finished=()
while true; do
    if [[ -n $master ]] && ! ours "$master"; then
        wait "$master" || status=$?
        collected "$master"
        break
    fi
    running=0
    for pid in "${pids[@]}"; do
        [[ $pid == "$master" || -n ${finished[$pid]:-} ]] && continue
        if ours "$pid"; then
            running=$((running + 1))
            continue
        fi
        code=0
        wait "$pid" || code=$?
        collected "$pid"
        finished[$pid]=$code
        if ((code != 0)); then
            echo "distributed.sh: worker $pid exited with status $code; stopping the run" >&2
            cleanup
            exit 1
        fi
    done
    # ROLE=worker: done once every worker has left (the master ended the run)
    [[ -z $master && $running -eq 0 ]] && break
    sleep 0.2
done
# workers leave by themselves when the master quits; give them a moment, then clean up
for pid in "${pids[@]}"; do
    [[ $pid == "$master" ]] && continue
    for _ in $(seq 25); do ours "$pid" || break; sleep 0.2; done
done
if [[ $role == worker ]]; then
    echo "==> workers done (exit status $status)"
else
    echo "==> results in $results/ (exit status $status)"
fi
exit "$status"
