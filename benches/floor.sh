#!/usr/bin/env bash
# The floor: how far the relay is from the 0.5 x echo target once storage, or the
# members' end-to-end AEAD, is taken away. Builds throwaway variants from
# benches/floor.patch in a scratch git worktree (never in this checkout: a relay that
# does not store must never ship) and runs, per round, the 10-connection 1 KiB echo and
# five 10-talk relaybench runs:
#   main            nook as shipped (this checkout's release binaries)
#   nosync          the relay stores but skips fdatasync and the sled flush (NOOK_FLOOR=1)
#   main-noaead     members do not encrypt: bodies are padded plaintext (NOOK_NOAEAD=1)
#   nostore         the relay stores nothing: no seal, no log record, no commit thread;
#                   Stored and the push leave at once (NOOK_FLOOR=3)
#   nostore-noaead  both
#
# usage (from the project root):   bash benches/floor.sh
# env: OUT=benches/results/latest/floor  ROUNDS=4  DURATION=6
# The first run builds the variants into target/floor (a cold build, ~4 min).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-benches/results/latest/floor}"
ROUNDS="${ROUNDS:-4}"
DURATION="${DURATION:-6}"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cargo build --release -p nook-relay -p nook-bench
B=target/release
F="$PWD/target/floor/release"
tree=$(mktemp -d -t nook-floor-XXXXXX)
trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"' EXIT
git worktree add --detach "$tree" HEAD >/dev/null
git -C "$tree" apply "$PWD/benches/floor.patch"
log "building the floor variants in $tree"
(cd "$tree" && cargo build --release -p nook-relay -p nook-bench --target-dir "$(dirname "$F")")

mkdir -p "$OUT"
for v in echo main nosync main-noaead nostore nostore-noaead; do : > "$OUT/$v.jsonl"; done
run() {  # run <name> <relaybench> <relay> [env...]
  local name=$1 bench=$2 relay=$3; shift 3
  log "round $round: $name"
  env "$@" "$bench" --relay-bin "$relay" --runs 1 --duration "$DURATION" --talks 10 \
    --no-latency --jsonl "$OUT/$name.jsonl" | grep '^run'
}
for round in $(seq "$ROUNDS"); do
  log "round $round: echo"
  "$B/echo" --runs 1 --duration "$DURATION" --conns 10 --size 1024 --no-latency \
    --jsonl "$OUT/echo.jsonl" | grep '^run'
  run main "$B/relaybench" "$B/nook-relay"
  run nosync "$B/relaybench" "$F/nook-relay" NOOK_FLOOR=1
  run main-noaead "$F/relaybench" "$B/nook-relay" NOOK_NOAEAD=1
  run nostore "$B/relaybench" "$F/nook-relay" NOOK_FLOOR=3
  run nostore-noaead "$F/relaybench" "$F/nook-relay" NOOK_FLOOR=3 NOOK_NOAEAD=1
done

python3 - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, statistics, sys
out = sys.argv[1]
def runs(name):
    with open(f"{out}/{name}.jsonl") as f:
        return [json.loads(l) for l in f if l.strip()]
echo = [r["msgs_per_s"] for r in runs("echo")]
print(f"echo 1 KiB, 10 conns: {', '.join(f'{x:.0f}' for x in echo)}")
print("variant          median msg/s  / echo per round              median  unit cost (echo = 1)")
for v in ["main", "nosync", "main-noaead", "nostore", "nostore-noaead"]:
    rs = runs(v)
    if len(rs) != len(echo):
        sys.exit(f"{v}: {len(rs)} runs for {len(echo)} echo runs; rerun it by hand to see its error")
    ratios = [r["msgs_per_s"] / e for r, e in zip(rs, echo)]
    m = statistics.median(ratios)
    print(f"{v:15} {statistics.median(r['msgs_per_s'] for r in rs):>13.0f}  "
          f"{', '.join(f'{q:.3f}' for q in ratios):28}  {m:.3f}   {1 / m:.2f}")
EOF
