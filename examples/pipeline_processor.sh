#!/usr/bin/env bash
# The multi-stage pipeline of docs/COOKBOOK.md, section 4: items go
# ingest -> process -> output, each stage a claim queue in the tasks cursor, with per-item
# progress in the logs cursor as the cookbook's monitor writes it.
#
# Keys: tasks: stage.ingest.item_N, stage.process.item_N, stage.output.item_N (the queues),
#              results.item_N (the output), passed.STAGE.item_N (who moved it on),
#              pipeline.{seq,total_items,passed.STAGE} (counters)
#       logs:  pipeline.item_N.{stage,worker,started}
#       main:  pipeline.stages
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
STAGES=(ingest process output)

usage() {
  cat <<EOF
Usage: ${0##*/} [OPTIONS]

Move items through the stages ${STAGES[*]}, each stage's workers claiming from its queue.

Options:
  --items N         add N new items to stage.ingest first (default: 20; only with --stage all
                    or ingest; 0 adds none, to join a running pipeline)
  --stage NAME      run one stage (${STAGES[*]}) or all of them (default: all)
  --workers N       workers per stage (default: 1)
  --lease S         claim lease (default: 30)
  --work-seconds S  simulated work per item and stage (default: 0.02)
  --poll S          how long one claim waits (default: 1)
  -h, --help        show this help

A stage's workers stop once the stage has passed on every item the pipeline has taken in.
SIGINT/SIGTERM: each worker releases the item it holds and the script exits 0.
Exit 1 on an error, 2 on a usage error.
EOF
}

ITEMS="" STAGE=all WORKERS=1 LEASE=30 WORK_SECONDS=0.02 POLL=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --items) need_value "$@"; need_int "$1" "$2"; ITEMS=$2; shift 2 ;;
    --stage) need_value "$@"; STAGE=$2; shift 2 ;;
    --workers) need_value "$@"; need_int "$1" "$2"; WORKERS=$2; shift 2 ;;
    --lease) need_value "$@"; need_seconds "$1" "$2"; LEASE=$2; shift 2 ;;
    --work-seconds) need_value "$@"; need_seconds "$1" "$2"; WORK_SECONDS=$2; shift 2 ;;
    --poll) need_value "$@"; need_seconds "$1" "$2"; POLL=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ " all ${STAGES[*]} " == *" $STAGE "* ]] || die "--stage wants all or one of: ${STAGES[*]}"
if [[ $STAGE == all || $STAGE == ingest ]]; then
  ITEMS=${ITEMS:-20}
elif [[ -n $ITEMS ]]; then
  die "--items goes with --stage all or ingest"
fi
((WORKERS > 0)) || die "--workers must be at least 1"
need_prontodb

next_of() { # REPLY = the queue after a stage
  case $1 in ingest) REPLY=stage.process ;; process) REPLY=stage.output ;; output) REPLY=results ;; esac
}

# True once STAGE has passed on as many items as the pipeline has taken in.
stage_finished() {
  local key value total=0 passed=0 listing
  capture listing prontodb --cursor tasks scan pipeline
  while IFS='=' read -r key value; do
    case $key in
      pipeline.total_items) total=$value ;;
      "pipeline.passed.$1") passed=$value ;;
    esac
  done <<<"$listing"
  ((total > 0 && passed >= total))
}

# The EXIT trap of a stage worker: give back the item in hand, now rather than when its lease
# ends. A child forked for `cmd &` runs its parent's traps if a signal reaches it before it has
# exec'd cmd, hence the pid check (without it, the item would be released twice).
finish_stage() {
  ((BASHPID == OWNER)) || return 0
  if [[ -n $HELD ]]; then
    prontodb --user "$ME" --cursor tasks release "$HELD" --token "$HELD_TOKEN" &&
      echo "$ME: released ${HELD##*.}"
  fi
  echo "$ME: stopped after moving $MOVED items"
}

# One worker of one stage. It always runs in a background subshell of its own, so its state is
# in that subshell's global variables, which its EXIT trap can read.
run_stage() {
  local out rc acked item value="" work
  STAGE=$1 ME=$2 HELD="" HELD_TOKEN="" MOVED=0 STOP=0 OWNER=$BASHPID out=""
  next_of "$STAGE"
  NEXT=$REPLY
  trap 'STOP=1' TERM INT
  trap finish_stage EXIT
  while ((!STOP)) && [[ ! -e $STOP_FILE ]]; do
    rc=0
    capture out prontodb --user "$ME" --cursor tasks --json claim "stage.$STAGE" --wait "$POLL" \
      --lease "$LEASE" 2>/dev/null || rc=$?
    if ((rc == 4)); then
      if stage_finished "$STAGE"; then break; fi
      continue
    fi
    if ((rc != 0)); then
      ((STOP)) && break # Ctrl-C at a terminal reaches the claim too (exit 1, "Aborted!")
      echo "$ME: claim failed ($rc)" >&2
      return 1
    fi
    json_field key "$out" && HELD=$REPLY
    json_field token "$out" && HELD_TOKEN=$REPLY
    json_field value "$out" && value=$REPLY
    item=${HELD##*.}
    ((!STOP)) || break
    utc_now
    prontodb --user "$ME" --cursor logs txn >/dev/null <<EOF
{"ops": [{"op": "set", "key": "pipeline.$item.stage", "value": "$STAGE"},
         {"op": "set", "key": "pipeline.$item.worker", "value": "$ME"},
         {"op": "set", "key": "pipeline.$item.started", "value": "$REPLY"}]}
EOF
    # The stage's work (here: appending the stage's name to the value), in the background so
    # that a signal ends the wait at once; finish_stage then releases the item.
    ((!STOP)) || break
    sleep "$WORK_SECONDS" &
    work=$!
    ((STOP)) || wait "$work" || true
    if ((STOP)); then kill -KILL "$work" 2>/dev/null || true; wait "$work" || true; break; fi
    # Claim semantics leave no single step that acks here and sets in the next queue, so the
    # hand-off is one txn guarded by a marker: if this worker dies after the txn but before the
    # ack, the lease runs out, the item is handed out again, the compare on passed.STAGE.item
    # fails (exit 5) and the redelivery is only acked. Each item enters each stage once.
    rc=0
    prontodb --user "$ME" --cursor tasks txn >/dev/null 2>&1 <<EOF || rc=$?
{"compares": [{"key": "passed.$STAGE.$item", "target": "exists", "op": "==", "value": false}],
 "ops": [{"op": "set", "key": "passed.$STAGE.$item", "value": "$ME"},
         {"op": "set", "key": "$NEXT.$item", "value": "$value|$STAGE"},
         {"op": "incr", "key": "pipeline.passed.$STAGE", "by": 1}]}
EOF
    ((rc == 0 || rc == 5)) || { echo "$ME: txn failed ($rc)" >&2; return 1; }
    acked=0
    prontodb --user "$ME" --cursor tasks ack "$HELD" --token "$HELD_TOKEN" || acked=$?
    HELD="" # exit 5: the lease ran out first; the marker keeps the next holder from redoing it
    ((acked == 0 || acked == 5)) || return 1
    if ((rc == 0)); then
      MOVED=$((MOVED + 1))
      echo "$ME: $item $STAGE -> $NEXT"
    else
      echo "$ME: $item had already passed $STAGE; redelivery acked"
    fi
  done
}

if ((${ITEMS:-0} > 0)); then
  # Ids from a counter, so two runs that add items never reuse one; one txn puts them all in.
  last=0
  capture last prontodb --user orchestrator --cursor tasks incr pipeline.seq "$ITEMS"
  ops="{\"op\": \"incr\", \"key\": \"pipeline.total_items\", \"by\": $ITEMS}"
  for ((i = last - ITEMS + 1; i <= last; i++)); do
    ops+=",{\"op\": \"set\", \"key\": \"stage.ingest.item_$i\", \"value\": \"raw:$i\"}"
  done
  prontodb --user orchestrator --cursor tasks txn >/dev/null <<<"{\"ops\": [$ops]}"
  stages=${STAGES[*]}
  prontodb --user orchestrator --cursor main set pipeline.stages "${stages// /,}"
  echo "added $ITEMS items (item_$((last - ITEMS + 1)) .. item_$last)"
fi

PIDS=() STOP_FILE="$CAPTURE_DIR/stop"
stop_all() { # forward SIGINT/SIGTERM to the workers (background ones ignore SIGINT)
  in_script || return 0 # see lib/common.sh
  local pid
  : >"$STOP_FILE" # also seen by a worker that was still starting (see lib/common.sh)
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap stop_all INT TERM
for stage in "${STAGES[@]}"; do
  [[ $STAGE == all || $STAGE == "$stage" ]] || continue
  for ((w = 1; w <= WORKERS; w++)); do
    run_stage "$stage" "${stage}_worker$w" &
    PIDS+=($!)
  done
done
status=0
for pid in "${PIDS[@]}"; do
  # A signal ends `wait` early (status > 128): wait again until the worker is gone, then once
  # more for its own exit status.
  while kill -0 "$pid" 2>/dev/null; do wait "$pid" || true; done
  rc=0
  wait "$pid" || rc=$?
  ((rc == 0)) || status=1
done
exit "$status"
