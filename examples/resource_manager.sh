#!/usr/bin/env bash
# The resource manager of docs/COOKBOOK.md, section 3: a pool of a
# resource (cpu_cores by default) in the allocation cursor, allocations taken from it and given
# back, each as one all-or-nothing `txn`, and every decision in the audit trail (section 10).
#
# Keys: allocation: pools.RESOURCE (what is free), allocated.WORKER.RESOURCE (what WORKER holds)
#       logs:       decisions.NNNNNNNN
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() {
  cat <<EOF
Usage: ${0##*/} [OPTIONS]

Initialise a resource pool, allocate from it and release to it, atomically.

Options:
  --init N               set the pool to N free units (forgets nothing else)
  --allocate WORKER N    give WORKER N units if N are free (exit 5 if not)
  --release WORKER       give WORKER's units back to the pool (exit 3 if it holds none)
  --status               print the pools and the allocations
  --resource NAME        the resource (default: cpu_cores; the cookbook also has memory_gb, gpu_units)
  --wait S               with --allocate: wait up to S seconds for units to be released
                         (default: 0, answer at once)
  --name NAME            the manager's user name (default: resources)
  -h, --help             show this help

Actions run in the order --init, --release, --allocate, --status. Exit status: 0 done,
5 allocation refused, 3 nothing to release, 1 an error, 2 a usage error. SIGINT/SIGTERM during
--wait: exit 130/143 without allocating.
EOF
}

NAME=resources RESOURCE=cpu_cores INIT="" ALLOC_WORKER="" ALLOC_N="" RELEASE_WORKER="" STATUS=0
WAIT=0 out="" meta=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --init) need_value "$@"; need_int "$1" "$2"; INIT=$2; shift 2 ;;
    --allocate)
      [[ $# -ge 3 ]] || die "--allocate needs WORKER and N"
      need_name "$1" "$2"; need_int "$1" "$3"; ALLOC_WORKER=$2 ALLOC_N=$3; shift 3 ;;
    --release) need_value "$@"; need_name "$1" "$2"; RELEASE_WORKER=$2; shift 2 ;;
    --status) STATUS=1; shift ;;
    --resource) need_value "$@"; need_name "$1" "$2"; RESOURCE=$2; shift 2 ;;
    --wait) need_value "$@"; need_int "$1" "$2"; WAIT=$2; shift 2 ;;
    --name) need_value "$@"; need_name "$1" "$2"; NAME=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ -n $INIT$ALLOC_WORKER$RELEASE_WORKER ]] || ((STATUS)) || die "nothing to do (see --help)"
need_prontodb

alloc() { prontodb --user "$NAME" --cursor allocation "$@"; }
decide() { log_entry "$NAME" decisions "$@"; }
POOL="pools.$RESOURCE"
# A watch started for --wait runs in the background; SIGINT/SIGTERM end it too.
WATCH_PID=""
stop_watch() { if [[ -n $WATCH_PID ]]; then kill -KILL "$WATCH_PID" 2>/dev/null || true; fi; }
trap 'stop_watch; exit 130' INT
trap 'stop_watch; exit 143' TERM

if [[ -n $INIT ]]; then
  alloc set "$POOL" "$INIT"
  decide "pool_initialised:$RESOURCE=$INIT"
fi

if [[ -n $RELEASE_WORKER ]]; then
  key="allocated.$RELEASE_WORKER.$RESOURCE"
  capture meta alloc --json get --meta "$key" 2>/dev/null || {
    echo "$RELEASE_WORKER holds no $RESOURCE" >&2
    exit 3
  }
  json_field value "$meta" && held=$REPLY
  json_field mod_rev "$meta" && rev=$REPLY
  # Get-then-give-back races too: two releases of one allocation would both add it to the pool.
  # The compare on the key's modify revision lets exactly one of them through (the other sees
  # the key gone or changed and exits 5), and the pool and the key change together.
  alloc txn >/dev/null <<EOF || { echo "the allocation changed meanwhile; nothing released" >&2; exit 5; }
{"compares": [{"key": "$key", "target": "mod_rev", "op": "==", "value": $rev}],
 "ops": [{"op": "del", "key": "$key"}, {"op": "incr", "key": "$POOL", "by": $held}]}
EOF
  decide "released:$RELEASE_WORKER:$RESOURCE=$held"
  echo "released $held $RESOURCE from $RELEASE_WORKER"
fi

if [[ -n $ALLOC_WORKER ]]; then
  key="allocated.$ALLOC_WORKER.$RESOURCE"
  deadline=$((SECONDS + WAIT))
  while :; do
    # The cookbook's recipe reads the pool, checks, then writes the difference: two workers both see
    # 8 free cores, both take 6, and 12 are handed out. Here the broker checks and takes in one
    # step: compare 0 fails if too few units are free, compare 1 if WORKER already holds some
    # (a second allocation would overwrite the first, and its units would never come back).
    rc=0
    capture out alloc txn <<EOF || rc=$?
{"compares": [{"key": "$POOL", "op": ">=", "value": $ALLOC_N},
              {"key": "$key", "target": "exists", "op": "==", "value": false}],
 "ops": [{"op": "incr", "key": "$POOL", "by": -$ALLOC_N},
         {"op": "set", "key": "$key", "value": $ALLOC_N}]}
EOF
    if ((rc == 0)); then
      decide "allocated:$ALLOC_WORKER:$RESOURCE=$ALLOC_N"
      echo "allocated $ALLOC_N $RESOURCE to $ALLOC_WORKER"
      break
    fi
    ((rc == 5)) || exit 1 # the CLI has said why
    if [[ $out =~ compares=([0-9,]+) && ,${BASH_REMATCH[1]}, == *,1,* ]]; then
      echo "$ALLOC_WORKER already holds $RESOURCE; release it first" >&2
      exit 5
    fi
    capture meta alloc --json get --meta "$POOL" 2>/dev/null || meta=""
    free=none rev=0
    json_field value "$meta" && free=$REPLY
    json_field mod_rev "$meta" && rev=$REPLY
    if [[ $free == none ]] || ((SECONDS >= deadline)); then
      decide "refused:$ALLOC_WORKER:$RESOURCE=$ALLOC_N:free=$free"
      echo "refused: $ALLOC_N $RESOURCE for $ALLOC_WORKER, $free free" >&2
      exit 5
    fi
    if ((free >= ALLOC_N)); then continue; fi # released since our txn: try again now
    # --wait: sleep until the pool changes. Watching from just after the revision we read misses
    # no release that came in between (a poll loop would either spin or sleep through one).
    prontodb --user "$NAME" --cursor allocation watch "$POOL" --count 1 \
      --from-rev $((rev + 1)) --timeout $((deadline - SECONDS)) \
      >/dev/null &
    WATCH_PID=$!
    wait "$WATCH_PID" || true
    WATCH_PID=""
  done
fi

if ((STATUS)); then
  alloc scan pools
  alloc scan allocated
fi
