# Helpers for bench/run: processes, readiness, memory sampling, wrk runs.
# Sourced, not executed. Expects WORK, CLIENT_CPUS, SERVER_CPUS, PIN,
# RESULTS, BENCH_SECONDS and UPSTREAM_PORT to be set.

CLOCK_TICKS=$(getconf CLK_TCK)

# PIDs this harness started; cleanup stops exactly these.
STARTED_PIDS=()

say() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

# Runs a command pinned to the server CPUs (when pinning is on).
on_server_cpus() {
    if [[ $PIN == 1 ]]; then taskset -c "$SERVER_CPUS" "$@"; else "$@"; fi
}

# Runs a command pinned to the load generator's CPUs (when pinning is on).
on_client_cpus() {
    if [[ $PIN == 1 ]]; then taskset -c "$CLIENT_CPUS" "$@"; else "$@"; fi
}

# Starts a server in the background; stdout+stderr go to $WORK/<name>.log.
# Sets SERVER_PID (taskset execs, so it is the server's own PID).
start_server() {
    local name=$1
    shift
    # Not through on_server_cpus: a backgrounded function is a subshell, and
    # $! would be that subshell's PID instead of the server's.
    if [[ $PIN == 1 ]]; then
        taskset -c "$SERVER_CPUS" "$@" >>"$WORK/$name.log" 2>&1 &
    else
        "$@" >>"$WORK/$name.log" 2>&1 &
    fi
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
}

# Stops one server we started: SIGTERM, then SIGKILL after 15 s.
stop_server() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then stop_server "$pid"; fi
    done
    return 0
}

port_is_free() {
    [[ -z $(ss -Hltn "sport = :$1" 2>/dev/null) ]]
}

# Waits until `url` answers (any HTTP status) or the process dies.
wait_http() {
    local url=$1 pid=$2 name=$3 i
    for ((i = 0; i < 300; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -20 "$WORK/$name.log" >&2
            die "$name exited during start (log: $WORK/$name.log)"
        fi
        if curl -s -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.1
    done
    die "$name did not answer $url within 30 s (log: $WORK/$name.log)"
}

# Current resident set size of a process, in kB.
rss_kb() {
    local key value _
    while read -r key value _; do
        if [[ $key == VmRSS: ]]; then
            echo "$value"
            return
        fi
    done <"/proc/$1/status"
    echo 0
}

# The memory a process holds itself (RssAnon: heap, stacks), in kB. Unlike
# VmRSS it leaves out file pages mapped into the process (RssFile), such as
# the SQLite readers' mapping of the store file, which are the kernel's page
# cache.
anon_kb() {
    awk '/^RssAnon:/ {print $2; found = 1} END {if (!found) print 0}' "/proc/$1/status"
}

# Peak resident set size over the process's life (VmHWM), in kB.
hwm_kb() {
    awk '/^VmHWM:/ {print $2}' "/proc/$1/status"
}

# Samples VmRSS of a process every 0.2 s and keeps the maximum in $2.
# Run it in the background and kill it when the measurement ends.
sample_rss() {
    local pid=$1 out=$2 max=0 now
    echo 0 >"$out"
    while kill -0 "$pid" 2>/dev/null; do
        now=$(rss_kb "$pid")
        if ((now > max)); then
            max=$now
            echo "$max" >"$out"
        fi
        sleep 0.2
    done
}

# CPU time (user + system) a process has used so far, in clock ticks.
cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat")
    # Fields after the parenthesised command name; utime and stime are the
    # 14th and 15th fields of the whole line.
    stat=${stat##*) }
    awk '{print $12 + $13}' <<<"$stat"
}

# Runs wrk once against `url` and appends one row to $RESULTS:
#   scenario conns round rps p50_us p99_us peak_rss_kb errors cpu_us_per_request
# usage: measure SCENARIO CONNS ROUND SERVER_PID URL LUA_SCRIPT [wrk args...]
measure() {
    local scenario=$1 conns=$2 round=$3 pid=$4 url=$5 script=$6
    shift 6
    local out="$WORK/wrk-$scenario-c$conns-r$round.txt"
    local rss_file="$WORK/rss-$scenario-c$conns-r$round"
    # The sampler runs beside wrk, off the servers' CPU.
    local sampler_script
    sampler_script="$(declare -f rss_kb sample_rss); sample_rss $pid $rss_file"
    if [[ $PIN == 1 ]]; then
        taskset -c "$CLIENT_CPUS" bash -c "$sampler_script" &
    else
        bash -c "$sampler_script" &
    fi
    local sampler=$!
    local ticks_before
    ticks_before=$(cpu_ticks "$pid")
    on_client_cpus wrk -t1 -c"$conns" -d"${BENCH_SECONDS}s" --latency \
        -s "$script" "$@" "$url" >"$out" 2>&1 || true
    local ticks=$(($(cpu_ticks "$pid") - ticks_before))
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    local line
    line=$(grep '^BENCH_RESULT ' "$out") || {
        cat "$out" >&2
        die "wrk printed no result for $scenario (see $out)"
    }
    local requests duration_us p50_us p99_us connect read write timeout status
    eval "$(sed 's/^BENCH_RESULT //; s/ /;/g' <<<"$line")"
    local errors=$((connect + read + write + timeout + status))
    local rps cpu_us
    rps=$(awk -v r="$requests" -v d="$duration_us" 'BEGIN {printf "%.0f", (d > 0 ? r / (d / 1e6) : 0)}')
    # The server's CPU time per request: steadier than req/s on a busy host.
    cpu_us=$(awk -v t="$ticks" -v hz="$CLOCK_TICKS" -v r="$requests" \
        'BEGIN {printf "%.1f", (r > 0 ? t * 1e6 / hz / r : 0)}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$conns" "$round" "$rps" \
        "$p50_us" "$p99_us" "$(cat "$rss_file")" "$errors" "$cpu_us" >>"$RESULTS"
    say "$(printf '%-16s c=%-3s round %s: %8s req/s  p50 %7.0f us  p99 %7.0f us  CPU %6s us/req  errors %s' \
        "$scenario" "$conns" "$round" "$rps" "$p50_us" "$p99_us" "$cpu_us" "$errors")"
}

# The value of one Prometheus counter line (0 when absent).
metric() {
    local url=$1 pattern=$2
    curl -s "$url" | awk -v p="$pattern" 'index($0, p) == 1 {v = $NF} END {print v + 0}'
}

# A field of the bench upstream's /_stats JSON (0 when absent).
upstream_stat() {
    curl -s "http://127.0.0.1:$UPSTREAM_PORT/_stats" |
        sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" | awk '{print $1 + 0} END {if (NR == 0) print 0}'
}

# Counts the user-space instructions a server executes per request, under
# valgrind's callgrind: the same count for the same binary and requests,
# whatever else the machine is doing. Counting is switched on only for the
# measured requests (after a warm-up), so start-up is left out.
# usage: count_instructions VAR NAME PORT TOKENS_FILE -- COMMAND...
# (COUNT_PATH: the path requested, default /api/count)
# Sets VAR to the instructions per request.
count_instructions() {
    local var=$1 name=$2 port=$3 tokens=$4
    shift 5
    local out=$WORK/callgrind-$name.out log=$WORK/callgrind-$name.log
    local requests url="http://127.0.0.1:$port"
    requests=$(wc -l <"$tokens")
    # Not through on_server_cpus: $! must be valgrind's own PID.
    if [[ $PIN == 1 ]]; then
        taskset -c "$SERVER_CPUS" valgrind --tool=callgrind --instr-atstart=no \
            --callgrind-out-file="$out" "$@" >>"$log" 2>&1 &
    else
        valgrind --tool=callgrind --instr-atstart=no \
            --callgrind-out-file="$out" "$@" >>"$log" 2>&1 &
    fi
    local pid=$!
    STARTED_PIDS+=("$pid")
    local i
    for ((i = 0; i < 600; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited under valgrind (log: $log)"
        curl -s -o /dev/null --max-time 5 "$url/api/ready" && break
        sleep 0.2
    done
    local touch=("$TOKENS_BIN" touch --proxy "$url" --path "${COUNT_PATH:-/api/count}" --tokens "$tokens" --concurrency 4)
    on_client_cpus "${touch[@]}" >/dev/null 2>>"$WORK/bench_tokens.log" || die "$name: the warm-up failed"
    callgrind_control -i on "$pid" >/dev/null 2>&1
    on_client_cpus "${touch[@]}" >/dev/null 2>>"$WORK/bench_tokens.log" || die "$name: the measured requests failed"
    callgrind_control -i off "$pid" >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1
    # The profile is written: no need to wait for a graceful stop.
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local dump total
    dump=$(ls -t "$out".* 2>/dev/null | head -1) || true
    [[ -n $dump ]] || die "$name: callgrind wrote no profile (log: $log)"
    total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n {gsub(",", "", $1); print $1; n = 1}') || true
    [[ -n $total ]] || die "$name: no instruction total in $dump"
    printf -v "$var" '%s' $((total / requests))
}
