#!/usr/bin/env bash
# The orchestrator of docs/COOKBOOK.md: it initialises the workflow and
# fills the task queue (section 1), registers itself, publishes scaling signals from the queue
# depth (section 6) and logs every decision to the audit trail (section 10). With --wait it stays
# until the workers have completed every task, then sets workflow.status=completed.
#
# Keys: main:  workflow.{status,total_tasks,completed,progress_percent}, agents.NAME.*, scaling.*
#       tasks: queue.task_1 .. queue.task_N ("pending"), taken by worker_agent.sh with `claim`
#       logs:  decisions.NNNNNNNN (one per decision)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() {
  cat <<EOF
Usage: ${0##*/} [OPTIONS]

Initialise a workflow of N tasks for worker_agent.sh to claim, and optionally wait for it.

Options:
  --name NAME         the orchestrator's user name (default: orchestrator)
  --tasks N           how many tasks to queue as tasks:queue.task_1..N (default: 100)
  --batch N           tasks written per transaction (default: 50)
  --wait              stay until workflow.completed reaches N, then set workflow.status=completed
  --timeout S         with --wait: give up after S seconds, exit 1 (default: 0, never)
  --check-every N     with --wait: a scaling decision every N completions (default: 10)
  --ratio N           queued tasks per live worker before signalling scale_up (default: 10)
  -h, --help          show this help

Exit status: 0 done (or stopped by SIGINT/SIGTERM while waiting: the workflow stays "running"
for the workers), 1 timed out or an error, 2 a usage error.
The broker is the one PRONTODB_URL / PRONTODB_DATA_DIR points the prontodb CLI at.
EOF
}

NAME=orchestrator TASKS=100 BATCH=50 WAIT=0 TIMEOUT=0 CHECK_EVERY=10 RATIO=10
while [[ $# -gt 0 ]]; do
  case $1 in
    --name) need_value "$@"; need_name "$1" "$2"; NAME=$2; shift 2 ;;
    --tasks) need_value "$@"; need_int "$1" "$2"; TASKS=$2; shift 2 ;;
    --batch) need_value "$@"; need_int "$1" "$2"; BATCH=$2; shift 2 ;;
    --wait) WAIT=1; shift ;;
    --timeout) need_value "$@"; need_int "$1" "$2"; TIMEOUT=$2; shift 2 ;;
    --check-every) need_value "$@"; need_int "$1" "$2"; CHECK_EVERY=$2; shift 2 ;;
    --ratio) need_value "$@"; need_int "$1" "$2"; RATIO=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
((BATCH > 0 && CHECK_EVERY > 0)) || die "--batch and --check-every must be at least 1"
need_prontodb

main() { prontodb --user "$NAME" --cursor main "$@"; }
decide() { log_entry "$NAME" decisions "$@"; echo "$NAME: $*"; }

STOP=0 WATCH_PID=""
trap 'STOP=1' INT TERM
cleanup() {
  in_script || return 0 # see lib/common.sh
  # The watch runs in the background: end it by its pid, whatever way we leave.
  if [[ -n $WATCH_PID ]]; then
    kill -KILL "$WATCH_PID" 2>/dev/null || true
    wait "$WATCH_PID" 2>/dev/null || true
  fi
  main set "agents.$NAME.status" "offline" || true
  rm -rf "$CAPTURE_DIR"
}
trap cleanup EXIT

# Section 6, with the live workers counted by their TTL sessions (section 7, kept fresh by
# worker_agent.sh): the cookbook's recipe counts agents.*.status keys, which stay behind when a worker dies.
# Both signals go out in one txn, so a reader never sees a new action with an old target.
scaling_check() {
  local queued active action target listing
  capture listing prontodb --user "$NAME" --cursor tasks keys queue
  count_lines "$listing"
  queued=$REPLY
  capture listing main keys sessions.active
  count_lines "$listing"
  active=$REPLY
  if ((queued > active * RATIO)); then
    action=scale_up target=$((active + 2))
  elif ((queued == 0)); then
    action=scale_down target=0
  else
    action=hold target=$active
  fi
  main txn >/dev/null <<EOF
{"ops": [{"op": "set", "key": "scaling.action", "value": "$action"},
         {"op": "set", "key": "scaling.target_workers", "value": $target},
         {"op": "set", "key": "scaling.queue_depth", "value": $queued}]}
EOF
  decide "scale_decision:queue_depth=$queued:active=$active:action=$action:target=$target"
}

# Section 1. The workflow keys go in one txn: no worker ever sees a total without its counter.
# Its revision is where --wait starts watching, so no completion can slip in before the watch.
init=""
capture init main --json txn <<EOF
{"ops": [{"op": "set", "key": "workflow.status", "value": "initializing"},
         {"op": "set", "key": "workflow.total_tasks", "value": $TASKS},
         {"op": "set", "key": "workflow.completed", "value": 0},
         {"op": "set", "key": "workflow.progress_percent", "value": 0}]}
EOF
json_field revision "$init" && FROM_REV=$REPLY
utc_now
main txn >/dev/null <<EOF
{"ops": [{"op": "set", "key": "agents.$NAME.status", "value": "active"},
         {"op": "set", "key": "agents.$NAME.last_seen", "value": "$REPLY"},
         {"op": "set", "key": "agents.$NAME.capabilities", "value": "orchestration"}]}
EOF
# Section 7: a session key written without a TTL of its own still goes away after an hour.
main create-cache sessions.active 3600

# The cookbook's recipe writes one `set` per task (N round trips, and workers see a half-filled queue);
# a txn per batch is one call for BATCH tasks. It also drops a done.task_N left by an earlier
# run in the same database, which the workers would take for this run's (see worker_agent.sh).
for ((start = 1; start <= TASKS; start += BATCH)); do
  ops=""
  for ((i = start; i < start + BATCH && i <= TASKS; i++)); do
    ops+="${ops:+,}{\"op\": \"del\", \"key\": \"done.task_$i\"}"
    ops+=",{\"op\": \"set\", \"key\": \"queue.task_$i\", \"value\": \"pending\"}"
  done
  prontodb --user "$NAME" --cursor tasks txn >/dev/null <<<"{\"ops\": [$ops]}"
done
main set workflow.status running
decide "workflow_started:total_tasks=$TASKS"
scaling_check
((WAIT)) || exit 0

# Wait for the workers by watching workflow.completed (they `incr` it), not by polling `get`:
# --from-rev replays every change since the init txn, then goes on live, with no gap. The watch
# writes into a FIFO (not a <(...), see lib/common.sh) and runs in the background, ended by pid.
mkfifo "$CAPTURE_DIR/completed"
prontodb --user "$NAME" --cursor main watch workflow.completed --from-rev "$FROM_REV" \
  >"$CAPTURE_DIR/completed" &
WATCH_PID=$!
exec {WATCH_FD}<"$CAPTURE_DIR/completed"
completed=0 next_check=$CHECK_EVERY deadline=$((SECONDS + TIMEOUT))
while ((completed < TASKS)); do
  if ((STOP)); then
    decide "stopped_waiting:completed=$completed"
    exit 0
  fi
  if ((TIMEOUT > 0 && SECONDS >= deadline)); then
    decide "gave_up_waiting:completed=$completed:timeout=$TIMEOUT"
    exit 1
  fi
  # A 1 s read timeout keeps SIGINT/SIGTERM and --timeout responsive.
  rc=0
  read -r -t 1 -u "$WATCH_FD" _rev _type kv || rc=$?
  if ((rc > 128)); then continue; fi # timed out or interrupted: check again
  if ((rc != 0)); then echo "$NAME: the watch ended early" >&2; exit 1; fi
  [[ $kv == workflow.completed=* ]] || continue
  completed=${kv#*=}
  if ((completed >= next_check && completed < TASKS)); then
    next_check=$((completed + CHECK_EVERY))
    main set workflow.progress_percent $((completed * 100 / TASKS))
    echo "$NAME: $completed/$TASKS completed"
    scaling_check
  fi
done
main txn >/dev/null <<'EOF'
{"ops": [{"op": "set", "key": "workflow.status", "value": "completed"},
         {"op": "set", "key": "workflow.progress_percent", "value": 100}]}
EOF
decide "workflow_completed:completed=$completed"
scaling_check
