#!/usr/bin/env bash
# Redis instructions per job of the queue's scripts (see BENCHMARKS.md), for the working
# tree, or for a git revision: `xtask/lua-cost/run.sh [REV]`. Needs valgrind and python3.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
lua="$root/crates/queue/src/lua"
if [ $# -gt 0 ]; then
  tmp="$(mktemp -d)"
  for f in lib enqueue fetch finish fanout; do git -C "$root" show "$1:crates/queue/src/lua/$f.lua" > "$tmp/$f.lua"; done
  lua="$tmp"
fi
cd "$here"
# Scripts before the batched rewrite take one fan-out per call and keep the old layout.
old=$(grep -qE "(ids_json|claim_deadline_ms), n," "$lua/fanout.lua" && echo no || echo yes)
run() { python3 cg.py "$@"; }
enq=$(grep -q "data is written by an HSET" "$lua/enqueue.lua" && echo multi || echo args)
grep -q "then the n call" "$lua/enqueue.lua" && enq=split
budget=8
grep -q "for the default, which is not stored" "$lua/enqueue.lua" && budget=''
export BUDGET=$budget
ENQ_FORMAT=$enq run k_enq "$lua/enqueue.lua" "$lua/lib.lua" 1400 500
ENQ_FORMAT=$enq CALLS_A=50 CALLS_B=650 run k_enq1 "$lua/enqueue.lua" "$lua/lib.lua" 1400 1
FILL_CALLS=100 CALLS_A=10 CALLS_B=100 CLIENT_HMGET=$([ "$old" = yes ] || echo 1) run k_fetch "$lua/fetch.lua" "$lua/lib.lua" 1400 64
CALLS_A=50 CALLS_B=650 run k_finish "$lua/finish.lua" "$lua/lib.lua" 0 1
CALLS_A=4 CALLS_B=44 run k_finish "$lua/finish.lua" "$lua/lib.lua" 0 16
if [ "$old" = yes ]; then
  CALLS_A=50 CALLS_B=650 FANOUT_FORMAT=orig run k_fanout "$lua/fanout.lua" "$lua/lib.lua" 1600 1
else
  fmt=$(grep -q "claim_token" "$lua/fanout.lua" && echo claim || echo ids)
  grep -q "written by HSETNXs" "$lua/fanout.lua" && fmt=multi
  CALLS_A=50 CALLS_B=650 FANOUT_FORMAT=$fmt run k_fanout "$lua/fanout.lua" "$lua/lib.lua" 1600 1
  CALLS_A=4 CALLS_B=44 FANOUT_FORMAT=$fmt run k_fanout "$lua/fanout.lua" "$lua/lib.lua" 1600 16
  if [ "$fmt" != ids ]; then
    CLAIM=1 CALLS_A=50 CALLS_B=650 FANOUT_FORMAT=$fmt run k_fanout "$lua/fanout.lua" "$lua/lib.lua" 1600 1
    CLAIM=1 CALLS_A=4 CALLS_B=44 FANOUT_FORMAT=$fmt run k_fanout "$lua/fanout.lua" "$lua/lib.lua" 1600 16
  fi
fi
