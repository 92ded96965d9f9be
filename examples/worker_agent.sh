#!/usr/bin/env bash
# A worker of docs/COOKBOOK.md: it registers (section 1), keeps a TTL
# session as its heartbeat (sections 5 and 7), takes tasks from tasks:queue with `claim`, records
# each result once, counts it (section 2) and keeps its metrics (section 9).
#
# Keys: main:  agents.NAME.{status,last_seen,capabilities}, sessions.active.NAME (TTL),
#              workflow.completed (incr)
#       tasks: queue.task_N (claimed, then acked), done.task_N = NAME of the worker that did it
#       logs:  metrics.NAME.{tasks_completed,work_ms,duplicates}, audit.NNNNNNNN
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() {
  cat <<EOF
Usage: ${0##*/} [OPTIONS]

Claim tasks from tasks:queue (filled by orchestrator_agent.sh) and work on them until the
workflow is complete, the worker has been idle for --idle-exit seconds, or it is stopped.

Options:
  --name NAME          the worker's user name (default: worker<pid>)
  --capabilities LIST  what it announces in agents.NAME.capabilities (default: processing,analysis)
  --lease S            how long a claim holds a task before it goes back (default: 30)
  --poll S             how long one claim waits for a task (default: 1)
  --work-seconds S     the simulated work per task (default: 0.05)
  --max-tasks N        stop after N tasks (default: 0, no limit)
  --idle-exit S        stop after S seconds without a task (default: 30; 0: never)
  --session-ttl S      the heartbeat session's TTL, refreshed every S/3 (default: 15)
  -h, --help           show this help

It also stops, at once, when the queue is empty and workflow.completed has reached
workflow.total_tasks. SIGINT/SIGTERM: a task in hand is released (it is claimable again at once),
the session is deleted and the agent marked offline; exit status 0, as for any clean stop.
Exit 1 on an error, 2 on a usage error.
EOF
}

NAME="worker$$" CAPABILITIES="processing,analysis" LEASE=30 POLL=1 WORK_SECONDS=0.05
MAX_TASKS=0 IDLE_EXIT=30 SESSION_TTL=15
while [[ $# -gt 0 ]]; do
  case $1 in
    --name) need_value "$@"; need_name "$1" "$2"; NAME=$2; shift 2 ;;
    --capabilities)
      need_value "$@"
      [[ $2 =~ ^[A-Za-z0-9_.,-]+$ ]] || die "--capabilities wants a comma-separated list of names"
      CAPABILITIES=$2; shift 2 ;;
    --lease) need_value "$@"; need_seconds "$1" "$2"; LEASE=$2; shift 2 ;;
    --poll) need_value "$@"; need_seconds "$1" "$2"; POLL=$2; shift 2 ;;
    --work-seconds) need_value "$@"; need_seconds "$1" "$2"; WORK_SECONDS=$2; shift 2 ;;
    --max-tasks) need_value "$@"; need_int "$1" "$2"; MAX_TASKS=$2; shift 2 ;;
    --idle-exit) need_value "$@"; need_int "$1" "$2"; IDLE_EXIT=$2; shift 2 ;;
    --session-ttl) need_value "$@"; need_int "$1" "$2"; SESSION_TTL=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
((SESSION_TTL > 0)) || die "--session-ttl must be at least 1"
need_prontodb

main() { prontodb --user "$NAME" --cursor main "$@"; }
tasks() { prontodb --user "$NAME" --cursor tasks "$@"; }
logs() { prontodb --user "$NAME" --cursor logs "$@"; }

# Sections 5 and 7: the cookbook's heartbeat.NAME timestamp needs someone to compare clocks and decide
# the worker is gone; a session key with a TTL goes away by itself when the refreshes stop, and
# a `watch` sees that as an `expire` (monitor_agent.sh reports it).
session() { main set --ttl "$SESSION_TTL" "sessions.active.$NAME" "active:pid=$$:$EPOCHSECONDS"; }
# The heartbeat loop runs in the background and handles no signal: the worker stops it with a
# line on its control FIFO, and its pause is a `read -t` on that FIFO, so it has no child either.
# (A signal could reach it before its own trap was set; see lib/common.sh.)
heartbeat() {
  local ms=$((SESSION_TTL * 1000 / 3)) pause rc
  printf -v pause '%d.%03d' $((ms / 1000)) $((ms % 1000))
  while :; do
    rc=0
    read -r -t "$pause" -u "$HB_FD" _ || rc=$?
    ((rc > 128)) || exit 0 # the worker said stop
    # Killed with SIGKILL, the worker cannot tell us: stop refreshing once it is gone, so that
    # its session expires as it should.
    kill -0 "$$" 2>/dev/null || exit 0
    session || true # a missed refresh is not fatal; the TTL leaves room for two more
  done
}

STOP=0 HB_PID="" WORK_PID="" HELD_KEY="" HELD_TOKEN="" DONE=0 REASON="" out="" first=""
ERRORS="$CAPTURE_DIR/errors"
trap 'STOP=1' INT TERM
cleanup() {
  in_script || return 0 # see lib/common.sh
  if [[ -n $WORK_PID ]]; then kill -KILL "$WORK_PID" 2>/dev/null || true; wait "$WORK_PID" || true; fi
  if [[ -n $HB_PID ]]; then echo stop >&"$HB_FD"; wait "$HB_PID" || true; fi
  if [[ -n $HELD_KEY ]]; then
    # Stopped mid-task: give it back now rather than leave it to the lease (--lease seconds).
    if tasks release "$HELD_KEY" --token "$HELD_TOKEN"; then
      echo "$NAME: released ${HELD_KEY#queue.}"
      log_entry "$NAME" audit "task_released:${HELD_KEY#queue.}" || true
    fi
  fi
  main del "sessions.active.$NAME" || true # a clean sign-off: a delete, not an expire
  main set "agents.$NAME.status" offline || true
  log_entry "$NAME" audit "stopped:${REASON:-error}:tasks=$DONE" || true
  echo "$NAME: stopped (${REASON:-error}) after $DONE tasks"
  rm -rf "$CAPTURE_DIR"
}
trap cleanup EXIT

# True once the orchestrator's workflow has all its completions.
workflow_complete() {
  local key value total="" completed=0 listing
  capture listing main scan workflow
  while IFS='=' read -r key value; do
    case $key in
      workflow.total_tasks) total=$value ;;
      workflow.completed) completed=$value ;;
    esac
  done <<<"$listing"
  [[ -n $total ]] && ((completed >= total))
}

utc_now
main txn >/dev/null <<EOF
{"ops": [{"op": "set", "key": "agents.$NAME.status", "value": "active"},
         {"op": "set", "key": "agents.$NAME.last_seen", "value": "$REPLY"},
         {"op": "set", "key": "agents.$NAME.capabilities", "value": "$CAPABILITIES"}]}
EOF
session
mkfifo "$CAPTURE_DIR/heartbeat"
exec {HB_FD}<>"$CAPTURE_DIR/heartbeat" # read-write: the open does not wait for a reader
heartbeat >/dev/null &
HB_PID=$!
log_entry "$NAME" audit "started:capabilities=$CAPABILITIES"
echo "$NAME: started, claiming from tasks:queue"

idle_since=$SECONDS
while :; do
  if ((STOP)); then REASON=signal; break; fi
  if ((MAX_TASKS > 0 && DONE >= MAX_TASKS)); then REASON=max-tasks; break; fi
  # Section 1's get-then-set-then-del lets two workers take one task; `claim` hands it to one
  # worker under a lease, and a dead worker's task comes back when the lease runs out.
  rc=0
  capture out tasks --json claim queue --wait "$POLL" --lease "$LEASE" 2>"$ERRORS" || rc=$?
  if ((rc == 4)); then
    if ((STOP)); then REASON=signal; break; fi
    if workflow_complete; then REASON=workflow-complete; break; fi
    if ((IDLE_EXIT > 0 && SECONDS - idle_since >= IDLE_EXIT)); then REASON=idle; break; fi
    continue
  elif ((rc != 0)); then
    # Ctrl-C at a terminal reaches the claim too (it exits 1, "Aborted!"); if the broker had
    # already handed it a task, that task comes back when its lease runs out.
    if ((STOP)); then REASON=signal; break; fi
    cat "$ERRORS" >&2
    exit 1
  fi
  json_field key "$out" && HELD_KEY=$REPLY
  json_field token "$out" && HELD_TOKEN=$REPLY
  task=${HELD_KEY#queue.} idle_since=$SECONDS
  if ((STOP)); then REASON=signal; break; fi # cleanup releases it
  json_field deliveries "$out"
  echo "$NAME: working on $task (delivery $REPLY)"
  now_ms
  started=$REPLY
  sleep "$WORK_SECONDS" &
  WORK_PID=$!
  ((STOP)) || wait "$WORK_PID" || true # a signal ends the wait at once
  if ((STOP)); then REASON=signal; break; fi
  WORK_PID=""

  # The result is recorded once whatever happens to the claim: a task redelivered after a worker
  # lost its lease (or died between here and its ack) finds done.TASK there already (exit 5).
  rc=0
  tasks set --if-absent "done.$task" "$NAME" 2>"$ERRORS" || rc=$?
  ((rc == 0 || rc == 5)) || { cat "$ERRORS" >&2; exit 1; }
  acked=0
  tasks ack "$HELD_KEY" --token "$HELD_TOKEN" 2>"$ERRORS" || acked=$?
  # Exit 5: the lease ran out first and someone else holds (or finished) the task now. The
  # done.TASK record above decides who counts it, so nothing is counted twice either way.
  ((acked == 0 || acked == 5)) || { cat "$ERRORS" >&2; exit 1; }
  ((acked == 0)) || echo "$NAME: lost the lease of $task before its ack"
  HELD_KEY=""
  if ((rc == 5)); then
    capture first tasks get "done.$task"
    echo "$NAME: $task was already done by $first; not counted again"
    logs incr "metrics.$NAME.duplicates" >/dev/null
    continue
  fi
  # Section 2's counter is get, add one, set: two workers read 5 and both write 6, losing a
  # completion. incr adds on the broker, so every completion counts.
  main incr workflow.completed >/dev/null
  # Section 9: per-worker metrics, both counters in one call (avg = work_ms / tasks_completed).
  now_ms
  logs txn >/dev/null <<EOF
{"ops": [{"op": "incr", "key": "metrics.$NAME.tasks_completed", "by": 1},
         {"op": "incr", "key": "metrics.$NAME.work_ms", "by": $((REPLY - started))}]}
EOF
  DONE=$((DONE + 1))
  echo "$NAME: done $task"
done
exit 0
