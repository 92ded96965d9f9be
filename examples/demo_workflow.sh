#!/usr/bin/env bash
# A short run of the seed's task workflow through the `prontodb` CLI, with nothing started by hand:
# the first command starts a broker in the background (the embedded default), the last stops it.
#
#   orchestrator  fills tasks.queue with TASKS tasks and sets the workflow counters (seed section 1)
#   worker1/2     take tasks with `claim` (one worker per task, under a lease) and `ack` them,
#                 where the seed's get-then-set lets both workers take the same task
#   monitor       prints progress until every task is done
#
# Usage: examples/demo_workflow.sh [TASKS]   (default 20). It runs on a private data directory
# (PRONTODB_DATA_DIR, removed at the end) so it never touches your own databases.
set -euo pipefail

TASKS=${1:-20}
if ! command -v prontodb >/dev/null; then
  echo "prontodb is not on PATH; run ./scripts/demo.sh, or activate .venv first" >&2
  exit 1
fi

export PRONTODB_DATA_DIR="$(mktemp -d /tmp/prontodb-demo.XXXXXX)"
unset PRONTODB_URL PRONTODB_SOCKET PRONTODB_CURSOR
cleanup() {
  prontodb stop >/dev/null 2>&1 || true
  rm -rf "$PRONTODB_DATA_DIR"
}
trap cleanup EXIT
SECONDS=0

echo "== orchestrator: $TASKS tasks into the queue (the first call starts the broker)"
prontodb --user orchestrator --cursor main set workflow.status "running"
prontodb --user orchestrator --cursor main set workflow.total_tasks "$TASKS"
prontodb --user orchestrator --cursor main set workflow.completed 0
for i in $(seq 1 "$TASKS"); do
  prontodb --user orchestrator --cursor tasks set "queue.task_$i" "pending"
done

worker() {
  local me=$1 out key token
  prontodb --user "$me" --cursor main set "agents.$me.status" "active"
  # claim hands each task to one worker under a lease (the seed's get-then-set-then-del lets two
  # workers take the same task); ack finishes it. claim exits 4 once the queue is empty.
  while out=$(prontodb --user "$me" --cursor tasks --json claim queue --lease 30); do
    [[ $out =~ \"key\":\ \"([^\"]+)\" ]] && key=${BASH_REMATCH[1]}
    [[ $out =~ \"token\":\ ([0-9]+) ]] && token=${BASH_REMATCH[1]}
    prontodb --user "$me" --cursor tasks set "done.${key#queue.}" "$me"
    prontodb --user "$me" --cursor tasks ack "$key" --token "$token"
    # The seed's counter is get, add, set, which loses updates under two workers; incr does not.
    prontodb --user "$me" --cursor main incr workflow.completed >/dev/null
  done 2>/dev/null
  prontodb --user "$me" --cursor main set "agents.$me.status" "idle"
}

monitor() {
  local total done
  total=$(prontodb --user monitor --cursor main get workflow.total_tasks)
  while :; do
    done=$(prontodb --user monitor --cursor main get workflow.completed)
    printf '   monitor: %3d/%d tasks done\n' "$done" "$total"
    [ "$done" -ge "$total" ] && break
    sleep 0.5
  done
}

echo "== two workers claim tasks from the queue; a monitor prints progress"
worker worker1 &
w1=$!
worker worker2 &
w2=$!
monitor
wait "$w1" "$w2"
prontodb --user orchestrator --cursor main set workflow.status "done"

echo "== summary"
done_keys=$(prontodb --cursor tasks keys done | wc -l)
completed=$(prontodb --cursor main get workflow.completed)
left=$(prontodb --cursor tasks keys queue | wc -l)
prontodb --cursor tasks scan done | cut -d= -f2 | sort | uniq -c | while read -r n who; do
  echo "   $who finished $n tasks"
done
echo "   tasks done: $done_keys of $TASKS (counter: $completed), left in queue: $left, in ${SECONDS}s"
if [ "$done_keys" -ne "$TASKS" ] || [ "$completed" -ne "$TASKS" ] || [ "$left" -ne 0 ]; then
  echo "   FAILED: every task must be done exactly once" >&2
  exit 1
fi
echo "   every task was done exactly once"
