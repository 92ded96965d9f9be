#!/usr/bin/env bash
# The cookbook's workflow, end to end, on the embedded default: nothing is started by hand (the first
# `prontodb` call starts a broker in the background; the last one stops it).
#
#   orchestrator_agent.sh  fills tasks:queue with TASKS tasks (transactions of 50)
#   monitor_agent.sh       watches the tasks cursor and prints live progress (a watch, not polling)
#   worker_agent.sh x 3    claim, work, record, ack; worker3 is killed with SIGKILL mid-task, and
#                          its task comes back to the others when its 3-second lease runs out
#
# It ends with a summary (every task done exactly once, the redelivery, the elapsed time) and
# exits 0 only if every check holds. Usage: examples/demo_workflow.sh [TASKS] (default 100). It
# runs on a private data directory (PRONTODB_DATA_DIR, removed at the end), never on yours.
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0" # this header
  exit 0
fi

TASKS=${1:-100}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v prontodb >/dev/null; then
  echo "prontodb is not on PATH; run ./scripts/demo.sh, or activate .venv first" >&2
  exit 1
fi

# DEMO_DATA_DIR: where to put it instead (the tests' own directory, so they can clean up).
export PRONTODB_DATA_DIR="${DEMO_DATA_DIR:-$(mktemp -d /tmp/prontodb-demo.XXXXXX)}"
unset PRONTODB_URL PRONTODB_SOCKET PRONTODB_CURSOR PRONTODB_USER PRONTODB_TOKEN
# The agents' scratch files too: a SIGKILLed worker cannot remove its own.
export TMPDIR="$PRONTODB_DATA_DIR/tmp"
mkdir -p "$TMPDIR"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  prontodb stop >/dev/null 2>&1 || true
  rm -rf "$PRONTODB_DATA_DIR"
}
trap cleanup EXIT
SECONDS=0

echo "== orchestrator: $TASKS tasks into tasks:queue (its first call starts the broker)"
"$here/orchestrator_agent.sh" --tasks "$TASKS"

echo "== monitor: watching the tasks cursor from its first revision"
"$here/monitor_agent.sh" --expect "$TASKS" --timeout 120 &
MONITOR=$!
PIDS+=("$MONITOR")

echo "== workers: worker1, worker2 and worker3 (3-second leases)"
for name in worker1 worker2; do
  "$here/worker_agent.sh" --name "$name" --lease 3 --work-seconds 0.05 --idle-exit 20 &
  PIDS+=($!)
done
victim_log="$PRONTODB_DATA_DIR/worker3.out"
"$here/worker_agent.sh" --name worker3 --lease 3 --work-seconds 0.5 --idle-exit 20 >"$victim_log" &
VICTIM=$!
PIDS+=("$VICTIM")

# Kill worker3 the moment it has a task in hand: nothing releases it, only the lease can.
for _ in $(seq 600); do
  grep -q "working on" "$victim_log" && break
  sleep 0.05
done
victim_task=$(grep -m1 -o "working on task_[0-9]*" "$victim_log" | cut -d' ' -f3)
kill -KILL "$VICTIM"
wait "$VICTIM" 2>/dev/null || true
echo "== worker3 killed with SIGKILL while working on $victim_task; its lease will hand it back"

monitor_status=0
wait "$MONITOR" || monitor_status=$?
for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done

done_keys=$(prontodb --cursor tasks keys done | wc -l)
completed=$(prontodb --cursor main get workflow.completed)
left=$(prontodb --cursor tasks keys queue | wc -l)
redone_by=$(prontodb --cursor tasks get "done.$victim_task")

echo
echo "== summary"
echo "tasks:        $TASKS queued, $done_keys done (one done.TASK record each), $left left"
echo "counter:      workflow.completed = $completed (incr: no update lost)"
echo "redelivery:   $victim_task, held by worker3 when it died, was done by $redone_by"
echo "elapsed:      ${SECONDS}s"

status=0
[[ $done_keys -eq $TASKS && $completed -eq $TASKS && $left -eq 0 ]] || status=1
[[ $redone_by != worker3 && $monitor_status -eq 0 ]] || status=1
if ((status == 0)); then
  echo "every task was done exactly once"
else
  echo "a check failed (see above)" >&2
fi
exit "$status"
