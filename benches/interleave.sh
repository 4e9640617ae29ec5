#!/usr/bin/env bash
# The two throughput comparisons of the targets, interleaved: per round one 10-talk
# relaybench run, one 10-connection 1 KiB bare quinn echo run and one Redis
# `appendfsync always` run (Go client, ../shared/peers/redis.sh), so that each ratio
# pairs figures taken minutes apart. This VM drifts by 10-30 % within an hour (steal
# and softirq time show in the `foreign` column), which a sequential run.sh spreads
# over 40 minutes.
#
# usage (from the project root):   bash benches/interleave.sh
# env: OUT=benches/results/latest/interleaved  ROUNDS=3  DURATION=10
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-benches/results/latest/interleaved}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "$OUT"
: > "$OUT/relaybench.jsonl"
: > "$OUT/echo.jsonl"
: > "$OUT/redis.jsonl"
cargo build --release -p nook-relay -p nook-bench
B=target/release
for round in $(seq "$ROUNDS"); do
  log "round $round of $ROUNDS: nook"
  "$B/relaybench" --runs 1 --duration "$DURATION" --talks 10 --no-latency \
    --jsonl "$OUT/relaybench.jsonl" | grep '^run'
  log "round $round of $ROUNDS: echo"
  "$B/echo" --runs 1 --duration "$DURATION" --conns 10 --size 1024 --no-latency \
    --jsonl "$OUT/echo.jsonl" | grep '^run' || true
  log "round $round of $ROUNDS: redis aof-always"
  RUNS=1 VARIANTS=aof-always CLIENTS=go bash ../shared/peers/redis.sh 2> /dev/null \
    | grep '"label":"go-tput aof-always"' | tee -a "$OUT/redis.jsonl"
done

python3 - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, statistics, sys
out = sys.argv[1]
def rates(name):
    with open(f"{out}/{name}") as f:
        return [json.loads(l) for l in f if l.strip()]
nook, echo, redis = rates("relaybench.jsonl"), rates("echo.jsonl"), rates("redis.jsonl")
if not (len(nook) == len(echo) == len(redis)) or not nook:
    sys.exit(f"runs missing (nook {len(nook)}, echo {len(echo)}, redis {len(redis)}): "
             "rerun one part by hand to see its error (redis.sh's own output is hidden here)")
print("round   nook msg/s   echo msg/s  redis msg/s  nook/echo  nook/redis  nook/cpu-s  redis/cpu-s  foreign(nook)")
pairs = list(zip(nook, echo, redis))
for i, (n, e, r) in enumerate(pairs, 1):
    print(f"{i:>5} {n['msgs_per_s']:>12.0f} {e['msgs_per_s']:>12.0f} {r['msgs_per_s']:>12.0f}"
          f" {n['msgs_per_s'] / e['msgs_per_s']:>10.3f} {n['msgs_per_s'] / r['msgs_per_s']:>11.3f}"
          f" {n['msgs_per_relay_cpu_s']:>11.0f} {r['msgs_per_relay_cpu_s']:>12.0f}"
          f" {n.get('foreign_cpu_util', 0):>14.2f}")
med = lambda xs: statistics.median(xs)
print(f"median nook/echo {med([n['msgs_per_s'] / e['msgs_per_s'] for n, e, _ in pairs]):.3f} (target >= 0.5), "
      f"nook/redis {med([n['msgs_per_s'] / r['msgs_per_s'] for n, _, r in pairs]):.3f} (target >= 1.2), "
      f"per CPU-second nook/redis {med([n['msgs_per_relay_cpu_s'] / r['msgs_per_relay_cpu_s'] for n, _, r in pairs]):.3f}")
EOF
