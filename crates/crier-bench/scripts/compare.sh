#!/usr/bin/env bash
# Runs the scenarios of docs/benchmarks.md against Crier and the reference Faye server
# (Faye 1.4.3; faye-redis 0.2.0 for the cluster), one after the other on this machine,
# and appends one JSON line per run to $OUT. Every server and Redis it starts listens on
# 127.0.0.1 and is stopped (by its pid) when the script exits.
#
#   cargo build --release -p crier -p crier-bench
#   (cp -r /work/shared/faye-peer /tmp/faye-peer && cd /tmp/faye-peer && npm install)
#   crates/crier-bench/scripts/compare.sh            # all scenarios, about 15 minutes
#   SCENARIOS="single idle" crates/crier-bench/scripts/compare.sh
#
# Settings (environment): CRIER, BENCH (binaries), FAYE_DIR (the installed faye-peer),
# OUT (results file), PORT (first of the ports used, default 18000), DURATION (seconds
# per run, default 10), SCENARIOS (any of: single cluster modes latency idle redis ceiling
# one-publisher),
# SERVERS (default "crier faye"), LABEL_CRIER; the rates and counts below. (No variable
# of this script starts with CRIER_: crier reads those as configuration.)
set -euo pipefail

CRIER=${CRIER:-target/release/crier}
BENCH=${BENCH:-target/release/crier-bench}
FAYE_DIR=${FAYE_DIR:-/tmp/faye-peer}
OUT=${OUT:-bench-results.jsonl}
PORT=${PORT:-18000}
DURATION=${DURATION:-10}
SCENARIOS=${SCENARIOS:-single cluster modes latency idle redis ceiling one-publisher}
# Offered rates (messages/s over all publishers) for the zero-loss cluster sweep and the
# latency runs; 1,000 subscribers each, so deliveries/s = 1,000 x rate (the small latency
# runs: 100 subscribers).
SWEEP_CRIER=${SWEEP_CRIER:-100 200 300 400 600 800 1000 1500}
SWEEP_FAYE=${SWEEP_FAYE:-5 10 20 40}
# Latency is measured at each of these offered rates (1,000 subscribers): a sweep up to
# about two thirds of what Faye sustains (single node about 60k deliveries/s, cluster
# about 20k), since the ratio depends on how loaded Faye is.
LATENCY_RATES=${LATENCY_RATES:-10 20 40}
CLUSTER_LATENCY_RATES=${CLUSTER_LATENCY_RATES:-5 10 15}
SMALL_LATENCY_RATE=${SMALL_LATENCY_RATE:-100}
# Every latency point is measured this many times (Faye's p99 varies a lot between runs:
# a garbage collection in a 10 s run or not); docs/benchmarks.md gives the median.
LATENCY_ROUNDS=${LATENCY_ROUNDS:-3}
IDLE_COUNTS=${IDLE_COUNTS:-10000 19000}
# Which servers to run, and the label of the Crier build (to compare two builds).
SERVERS=${SERVERS:-crier faye}
LABEL_CRIER=${LABEL_CRIER:-crier}

A=$((PORT + 1)) B=$((PORT + 2)) REDIS=$((PORT + 79))
PIDS=()

log() { echo "compare.sh: $*" >&2; }

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
    PIDS=()
}
trap cleanup EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    for _ in $(seq 100); do port_free "$1" || return 0; sleep 0.1; done
    log "nothing listens on $1"; return 1
}

for p in $A $B $REDIS; do port_free "$p" || { log "port $p is taken; set PORT"; exit 1; }; done

# start_crier PORT [REDIS_PORT]
start_crier() {
    local redis=()
    [ -n "${2:-}" ] && redis=(--redis "redis://127.0.0.1:$2")
    "$CRIER" serve --listen "127.0.0.1:$1" "${redis[@]}" >"/tmp/compare-crier-$1.log" 2>&1 &
    PIDS+=($!); LAST=$!
    wait_port "$1"
}

# start_faye PORT [REDIS_PORT]
start_faye() {
    (cd "$FAYE_DIR" && exec node server.js "$@") >"/tmp/compare-faye-$1.log" 2>&1 &
    PIDS+=($!); LAST=$!
    wait_port "$1"
}

start_redis() {
    redis-server --port "$REDIS" --bind 127.0.0.1 --save '' --appendonly no >/tmp/compare-redis.log 2>&1 &
    PIDS+=($!); LAST=$!
    wait_port "$REDIS"
}

# Stops everything but Redis, and empties Redis.
restart() {
    local keep=()
    for p in "${PIDS[@]}"; do
        if [ "$p" = "${REDIS_PID:-}" ]; then keep+=("$p"); else kill "$p" 2>/dev/null || true; fi
    done
    for p in "${PIDS[@]}"; do
        [ "$p" = "${REDIS_PID:-}" ] && continue
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
    PIDS=("${keep[@]}")
    [ -n "${REDIS_PID:-}" ] && redis-cli -p "$REDIS" flushall >/dev/null
    return 0
}

bench() { # LABEL ARGS...
    local label=${1/#crier\//$LABEL_CRIER/}; shift
    log "$label: $*"
    "$BENCH" --label "$label" --json "$@" | tee -a "$OUT" || log "$label: the run failed"
}

url() { echo "http://127.0.0.1:$1/faye"; }

single() {
    for server in $SERVERS; do
        "start_$server" "$A"; pid=$LAST
        bench "$server/single/fan-out" --url "$(url "$A")" -s 1000 -p 2 --duration "$DURATION" --server-pid "$pid"
        bench "$server/single/fan-out-10ch" --url "$(url "$A")" -s 1000 -p 10 -c 10 --duration "$DURATION" --server-pid "$pid"
        restart
    done
}

cluster() {
    [ -n "${REDIS_PID:-}" ] || { start_redis; REDIS_PID=$LAST; }
    for server in $SERVERS; do
        local sweep=$SWEEP_CRIER
        [ "$server" = faye ] && sweep=$SWEEP_FAYE
        "start_$server" "$A" "$REDIS"; pa=$LAST
        "start_$server" "$B" "$REDIS"; pb=$LAST
        # Faye acknowledges a publish before fanning it out, so an ack-paced publisher
        # has no backpressure there and would only pile work up in the node process.
        [ "$server" = crier ] && bench "$server/cluster/fan-out" --sub-url "$(url "$A")" --pub-url "$(url "$B")" \
            -s 1000 -p 2 --duration "$DURATION" --server-pid "$pa" --server-pid "$pb"
        for rate in $sweep; do
            restart
            "start_$server" "$A" "$REDIS"; pa=$LAST
            "start_$server" "$B" "$REDIS"; pb=$LAST
            bench "$server/cluster/rate-$rate" --sub-url "$(url "$A")" --pub-url "$(url "$B")" -s 1000 -p 2 \
                --rate "$rate" --drain 15 --duration "$DURATION" --server-pid "$pa" --server-pid "$pb"
        done
        restart
    done
}

# One fixed-rate latency run: SERVER TOPOLOGY(single|cluster) LABEL SUBSCRIBERS RATE.
latency_run() {
    local server=$1 topology=$2 label=$3 subs=$4 rate=$5
    if [ "$topology" = single ]; then
        "start_$server" "$A"
        bench "$server/single/$label" --url "$(url "$A")" -s "$subs" -p 2 --rate "$rate" --duration "$DURATION"
    else
        "start_$server" "$A" "$REDIS"
        "start_$server" "$B" "$REDIS"
        bench "$server/cluster/$label" --sub-url "$(url "$A")" --pub-url "$(url "$B")" \
            -s "$subs" -p 2 --rate "$rate" --duration "$DURATION"
    fi
    restart
}

# The servers in turn, in a different order each round, so that a slow spell of the
# machine does not fall on one of them only.
rotated() { # ROUND
    local s=($SERVERS) n i
    n=${#s[@]}
    for ((i = 0; i < n; i++)); do echo "${s[$(((i + $1) % n))]}"; done
}

latency() {
    local round rate server
    for round in $(seq "$LATENCY_ROUNDS"); do
        # The machine's floor for the same fan-out, with no server (crier-bench --mode loopback).
        for rate in $LATENCY_RATES; do
            bench "floor/loopback/latency-$rate" --mode loopback -s 1000 --rate "$rate" --duration "$DURATION"
        done
        bench "floor/loopback/latency-100x$SMALL_LATENCY_RATE" --mode loopback -s 100 \
            --rate "$SMALL_LATENCY_RATE" --duration "$DURATION"
        for server in $(rotated "$round"); do
            for rate in $LATENCY_RATES; do
                latency_run "$server" single "latency-$rate" 1000 "$rate"
            done
            latency_run "$server" single "latency-100x$SMALL_LATENCY_RATE" 100 "$SMALL_LATENCY_RATE"
        done
    done
    [ -n "${REDIS_PID:-}" ] || { start_redis; REDIS_PID=$LAST; }
    for round in $(seq "$LATENCY_ROUNDS"); do
        for server in $(rotated "$round"); do
            for rate in $CLUSTER_LATENCY_RATES; do
                latency_run "$server" cluster "latency-$rate" 1000 "$rate"
            done
            latency_run "$server" cluster "latency-100x$SMALL_LATENCY_RATE" 100 "$SMALL_LATENCY_RATE"
        done
    done
}

idle() {
    for n in $IDLE_COUNTS; do
        for server in $SERVERS; do
            "start_$server" "$A"; pid=$LAST
            bench "$server/single/idle-$n" --mode idle --url "$(url "$A")" --clients "$n" --duration "$DURATION" \
                --server-pid "$pid"
            restart
        done
    done
}

redis() {
    [ -n "${REDIS_PID:-}" ] || { start_redis; REDIS_PID=$LAST; }
    for server in $SERVERS; do
        for n in 1 100 1000; do
            "start_$server" "$A" "$REDIS"
            "start_$server" "$B" "$REDIS"
            bench "$server/cluster/redis-$n" --sub-url "$(url "$A")" --pub-url "$(url "$B")" -s "$n" -p 1 \
                --rate 20 --messages 100 --duration "$DURATION" --drain 15 --redis "127.0.0.1:$REDIS"
            restart
        done
    done
}

# The other modes, side by side: fan-in (200 publishers as fast as acknowledgements
# allow, one subscriber), wildcard subscribers (/bench/* over 10 channels), long-polling
# subscribers, and fan-in through a cluster (publishers on one node, the subscriber on
# the other).
modes() {
    for server in $SERVERS; do
        "start_$server" "$A"; pid=$LAST
        bench "$server/single/fan-in" --mode fan-in --url "$(url "$A")" -p 200 --duration "$DURATION" \
            --server-pid "$pid"
        restart
        "start_$server" "$A"; pid=$LAST
        bench "$server/single/wildcard" --mode wildcard --url "$(url "$A")" -s 1000 -p 10 -c 10 \
            --duration "$DURATION" --server-pid "$pid"
        restart
        "start_$server" "$A"; pid=$LAST
        bench "$server/single/long-polling" --transport long-polling --url "$(url "$A")" -s 1000 -p 2 \
            --duration "$DURATION" --server-pid "$pid"
        restart
    done
    [ -n "${REDIS_PID:-}" ] || { start_redis; REDIS_PID=$LAST; }
    for server in $SERVERS; do
        "start_$server" "$A" "$REDIS"; pa=$LAST
        "start_$server" "$B" "$REDIS"; pb=$LAST
        bench "$server/cluster/fan-in" --mode fan-in --sub-url "$(url "$A")" --pub-url "$(url "$B")" -p 200 \
            --drain 15 --duration "$DURATION" --server-pid "$pa" --server-pid "$pb"
        restart
    done
}

# One publisher keeping 1, 16 or 64 publishes unacknowledged, through a cluster (the
# publisher on node B, one subscriber on node A): how far one client's publishing goes.
# Faye acknowledges before Redis has the message; Crier once it is in Redis.
one-publisher() {
    [ -n "${REDIS_PID:-}" ] || { start_redis; REDIS_PID=$LAST; }
    for server in $SERVERS; do
        for inflight in 1 16 64; do
            "start_$server" "$A" "$REDIS"; pa=$LAST
            "start_$server" "$B" "$REDIS"; pb=$LAST
            bench "$server/cluster/one-publisher-$inflight" --mode fan-in --sub-url "$(url "$A")" \
                --pub-url "$(url "$B")" -p 1 --inflight "$inflight" --drain 15 --duration "$DURATION" \
                --server-pid "$pa" --server-pid "$pb"
            restart
        done
    done
}

ceiling() {
    [ -n "${REDIS_PID:-}" ] || { start_redis; REDIS_PID=$LAST; }
    for pipeline in 1 16; do
        log "redis-benchmark PUBLISH, pipeline $pipeline"
        redis-benchmark -p "$REDIS" -n 200000 -c 50 -P "$pipeline" -q PUBLISH bench x | tr '\r' '\n' | tail -1 |
            sed "s/^/redis-benchmark -P $pipeline: /" | tee -a "${OUT%.jsonl}.txt"
    done
}

for s in $SCENARIOS; do "$s"; done
