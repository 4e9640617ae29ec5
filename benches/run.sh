#!/usr/bin/env bash
# nook benchmarks, in order: machine facts, fsync floor, relaybench (durable end to end),
# echo (bare quinn ceiling, with nook/echo ratios), idle (memory per connection and per
# mailbox), clibench (one-shot `nook send`, new talk to first message, close of 10,000).
# Optionally the peers (PEERS=1) afterwards, one at a time, with magic-wormhole last.
#
# usage (from the project root):   bash benches/run.sh
# env: OUT=benches/results/<name>   where results go (default: benches/results/latest)
#      RUNS=3 DURATION=10 TALKS=1,10,100 CONNS=1000,10000 MAILBOXES=100000 MAX_DISK_GB=20
#      SKIP="idle echo"              skip parts (fsync relaybench echo pinned idle clibench)
#      PEERS=1                       then run ../shared/peers/{redis,mosquitto,nats,rabbitmq,wormhole}.sh
#      PEER_LIST="redis"             ...or only these of them
# Never run two benchmarks (or a build) at once on this 2-core machine: every number
# would be skewed. Each binary waits (bounded) for the machine to be quiet first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-benches/results/latest}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-10}"
TALKS="${TALKS:-1,10,100}"
CONNS="${CONNS:-1000,10000}"
MAILBOXES="${MAILBOXES:-100000}"
MAX_DISK_GB="${MAX_DISK_GB:-20}"
SKIP="${SKIP:-}"
skip() { case " $SKIP " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "$OUT"
log "building (release): nook-relay, nook-cli and nook-bench"
cargo build --release -p nook-relay -p nook-cli -p nook-bench
B=target/release

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | grep -q . && echo '(dirty tree)')"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "kernel: $(uname -r)"
  echo "memory: $(free -g | awk '/Mem:/ {print $2 " GiB"}')"
  echo "disk: $(df -h . | awk 'NR==2 {print $1, $2, $6}') $(lsblk -dno NAME,ROTA,SIZE 2>/dev/null | tr '\n' ';')"
  echo "udp buffers: rmem_max $(sysctl -n net.core.rmem_max 2>/dev/null) wmem_max $(sysctl -n net.core.wmem_max 2>/dev/null)"
  echo "ulimit -n: $(ulimit -n)"
  echo "rustc: $(rustc --version)"
} | tee "$OUT/machine.txt"

if [ -f ../shared/peers/fsync_probe.py ] && ! skip fsync; then
  log "fsync floor (1 KiB write + fdatasync)"
  for _ in 1 2 3; do python3 ../shared/peers/fsync_probe.py; done | tee "$OUT/fsync.jsonl"
fi

if ! skip relaybench; then
  log "relaybench: latency and throughput at $TALKS talks, $RUNS runs"
  : > "$OUT/relaybench.jsonl"
  "$B/relaybench" --runs "$RUNS" --duration "$DURATION" --talks "$TALKS" \
    --jsonl "$OUT/relaybench.jsonl" | tee "$OUT/relaybench.txt"
  # 1 KiB is the envelope the relay stores and forwards (983 B of plaintext fill it); a
  # message of 1 KiB of plaintext needs the next bucket, 2 KiB: measured too, at 10 talks.
  log "relaybench: 2 KiB envelopes (a 1 KiB plaintext), throughput at 10 talks"
  : > "$OUT/relaybench-2k.jsonl"
  "$B/relaybench" --runs "$RUNS" --duration "$DURATION" --talks 10 --envelope 2048 --no-latency \
    --jsonl "$OUT/relaybench-2k.jsonl" | tee "$OUT/relaybench-2k.txt"
  # One talk runs into the relay's per-connection rate limit (20,000 requests/s): once
  # more with the limit raised, for the relay's own one-talk capacity.
  log "relaybench: 1 talk with the per-connection rate limit raised"
  : > "$OUT/relaybench-1talk-nolimit.jsonl"
  "$B/relaybench" --runs "$RUNS" --duration "$DURATION" --talks 1 --no-latency \
    --relay-arg=--requests-per-second=1000000 \
    --jsonl "$OUT/relaybench-1talk-nolimit.jsonl" | tee "$OUT/relaybench-1talk-nolimit.txt"
fi

if ! skip echo; then
  log "echo: bare quinn ceiling, 1 KiB payloads (ratios against relaybench)"
  : > "$OUT/echo.jsonl"
  "$B/echo" --runs "$RUNS" --duration "$DURATION" --conns "$TALKS" --size 1024 \
    --jsonl "$OUT/echo.jsonl" --compare "$OUT/relaybench.jsonl" | tee "$OUT/echo.txt"
  log "echo: 2 KiB payloads (against nook's 2 KiB envelopes), throughput at 10 connections"
  : > "$OUT/echo2k.jsonl"
  "$B/echo" --runs "$RUNS" --duration "$DURATION" --conns 10 --size 2048 --no-latency \
    --jsonl "$OUT/echo2k.jsonl" --compare "$OUT/relaybench-2k.jsonl" | tee "$OUT/echo2k.txt"
fi

if ! skip pinned && command -v taskset > /dev/null && [ "$(nproc)" -ge 2 ]; then
  # The same throughput runs with the server on CPU 0 and the load generator on CPU 1,
  # so that the relay's (and the echo server's) own one-core ceiling shows.
  log "pinned: server on CPU 0, load generator on CPU 1 (10 talks / connections)"
  : > "$OUT/relaybench-pinned.jsonl"
  NOOK_BENCH_SERVER_CPUS=0 taskset -c 1 "$B/relaybench" --runs "$RUNS" --duration "$DURATION" \
    --talks 10 --no-latency --jsonl "$OUT/relaybench-pinned.jsonl" | tee "$OUT/relaybench-pinned.txt"
  : > "$OUT/echo-pinned-1024.jsonl"
  NOOK_BENCH_SERVER_CPUS=0 taskset -c 1 "$B/echo" --runs "$RUNS" --duration "$DURATION" \
    --conns 10 --size 1024 --no-latency --jsonl "$OUT/echo-pinned-1024.jsonl" \
    --compare "$OUT/relaybench-pinned.jsonl" | tee "$OUT/echo-pinned-1024.txt"
fi

if ! skip idle; then
  log "idle: $CONNS connections, $MAILBOXES mailboxes (stops at $MAX_DISK_GB GB of data)"
  : > "$OUT/idle.jsonl"
  "$B/idle" --conns "$CONNS" --mailboxes "$MAILBOXES" --max-disk-gb "$MAX_DISK_GB" \
    --jsonl "$OUT/idle.jsonl" | tee "$OUT/idle.txt"
fi

if ! skip clibench; then
  log "clibench: one-shot nook send, new talk to first message, close of 10,000 messages"
  "$B/clibench" --runs "$RUNS" | tee "$OUT/clibench.txt"
fi

if [ "${PEERS:-0}" = 1 ]; then
  for p in ${PEER_LIST:-redis mosquitto nats rabbitmq wormhole}; do
    log "peer: $p (see ../shared/peers/$p.sh)"
    bash "../shared/peers/$p.sh" > "$OUT/peer-$p.txt" 2>&1 || log "$p exited $?"
    sed -n '/== .* results/,$p' "$OUT/peer-$p.txt"
  done
fi
log "done: results in $OUT"
