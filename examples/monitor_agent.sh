#!/usr/bin/env bash
# The monitor of docs/COOKBOOK.md: live progress (section 9's dashboard),
# heartbeat checks (section 5) through the workers' TTL sessions (section 7), and system metrics
# in the logs cursor (section 9). It reacts to `watch` events instead of polling `get` in a loop:
#   tasks cursor, every key: queue.task_N put/claim/release/ack and done.task_N puts (completions)
#   main cursor, sessions.*: a put is a live worker, a delete a clean sign-off, an expire a worker
#                            whose heartbeats stopped (the cookbook's `now - last_heartbeat > 90`)
# The tasks watch starts at --from-rev 1: it first replays the cursor's history, so the monitor
# sees every completion exactly once even if it starts after the workers (as long as the broker
# still keeps that history: the last 100 000 revisions by default).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() {
  cat <<EOF
Usage: ${0##*/} [OPTIONS]

Print live progress of the workflow run by orchestrator_agent.sh and worker_agent.sh.

Options:
  --name NAME      the monitor's user name (default: monitor)
  --expect N       stop after N completions, print the summary (default: 0, until stopped)
  --from-rev N     replay the tasks cursor from revision N (default: 1, its whole history)
  --timeout S      give up after S seconds (default: 0, never)
  -h, --help       show this help

Exit status: 0 after --expect completions or on SIGINT/SIGTERM (the summary is printed either
way), 1 on --timeout or if a watch fails, 2 on a usage error.
EOF
}

NAME=monitor EXPECT=0 FROM_REV=1 TIMEOUT=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --name) need_value "$@"; need_name "$1" "$2"; NAME=$2; shift 2 ;;
    --expect) need_value "$@"; need_int "$1" "$2"; EXPECT=$2; shift 2 ;;
    --from-rev) need_value "$@"; need_int "$1" "$2"; FROM_REV=$2; shift 2 ;;
    --timeout) need_value "$@"; need_int "$1" "$2"; TIMEOUT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
need_prontodb

declare -A DONE_BY=() PER_WORKER=() ALIVE=() QUEUED=()
SEEN=0 DUPLICATES=0 RELEASES=0 LOST=0 STOP=0 WATCH_PIDS=()
now_ms
STARTED_MS=$REPLY
trap 'STOP=1' INT TERM
cleanup() {
  in_script || return 0 # see lib/common.sh
  local pid
  for pid in "${WATCH_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${WATCH_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$CAPTURE_DIR"
}
trap cleanup EXIT

per_worker() { # REPLY = "worker1=N worker2=M ..." in name order
  local w line="" names
  printf '%s\n' "${!PER_WORKER[@]}" >"$CAPTURE_DIR/names"
  capture names sort "$CAPTURE_DIR/names"
  for w in $names; do line+=" $w=${PER_WORKER[$w]}"; done
  REPLY=${line# }
}

summary() {
  local elapsed_ms throughput
  now_ms
  elapsed_ms=$((REPLY - STARTED_MS))
  throughput=$((SEEN * 60000 / (elapsed_ms > 0 ? elapsed_ms : 1)))
  echo "$NAME: summary: saw $SEEN completions of ${#DONE_BY[@]} distinct tasks," \
    "$DUPLICATES duplicates, $RELEASES releases, $LOST lost heartbeats"
  per_worker
  echo "$NAME: per worker: $REPLY"
  # Section 9's system-wide metrics, written in one txn so a dashboard reads a consistent set.
  prontodb --user "$NAME" --cursor logs txn >/dev/null <<EOF || true
{"ops": [{"op": "set", "key": "metrics.system.completions_seen", "value": $SEEN},
         {"op": "set", "key": "metrics.system.total_throughput", "value": $throughput},
         {"op": "set", "key": "metrics.system.active_agents", "value": ${#ALIVE[@]}},
         {"op": "set", "key": "metrics.system.lost_heartbeats", "value": $LOST}]}
EOF
}

on_tasks_event() { # TYPE KEY VALUE
  local type=$1 key=$2 value=$3 task
  case $type:$key in
    put:queue.*) QUEUED[${key#queue.}]=1 ;;
    release:queue.*)
      RELEASES=$((RELEASES + 1))
      echo "$NAME: ${key#queue.} is back in the queue (released, or its lease ran out)" ;;
    put:done.*)
      task=${key#done.}
      if [[ -n ${DONE_BY[$task]-} ]]; then
        DUPLICATES=$((DUPLICATES + 1))
        echo "$NAME: DUPLICATE $task done again by $value (first by ${DONE_BY[$task]})"
        return
      fi
      DONE_BY[$task]=$value
      PER_WORKER[$value]=$((${PER_WORKER[$value]-0} + 1))
      SEEN=$((SEEN + 1))
      per_worker
      echo "$NAME: [$SEEN/$((EXPECT > 0 ? EXPECT : ${#QUEUED[@]}))] $task done by $value | $REPLY" ;;
  esac
}

on_session_event() { # TYPE KEY
  local type=$1 worker=${2#sessions.active.}
  case $type in
    put)
      if [[ -z ${ALIVE[$worker]-} ]]; then echo "$NAME: $worker is online"; fi
      ALIVE[$worker]=1 ;;
    delete)
      unset "ALIVE[$worker]"
      echo "$NAME: $worker signed off" ;;
    expire)
      unset "ALIVE[$worker]"
      LOST=$((LOST + 1))
      echo "$NAME: heartbeat lost: $worker (its session expired); marking it offline"
      prontodb --user "$NAME" --cursor main set "agents.$worker.status" offline || true
      log_entry "$NAME" audit "heartbeat_lost:$worker" || true ;;
  esac
}

# Two watches write into one FIFO; each writes a line in one write (atomic on a pipe under
# 4 KiB), so their lines do not interleave.
# Their keys tell them apart (the tasks cursor holds no sessions.* keys).
mkfifo "$CAPTURE_DIR/events"
prontodb --user "$NAME" --cursor tasks watch --from-rev "$FROM_REV" >"$CAPTURE_DIR/events" &
WATCH_PIDS+=($!)
prontodb --user "$NAME" --cursor main watch sessions >"$CAPTURE_DIR/events" &
WATCH_PIDS+=($!)
exec {EVENTS}<"$CAPTURE_DIR/events"
if ((EXPECT > 0)); then echo "$NAME: watching for $EXPECT completions"; else echo "$NAME: watching"; fi

deadline=$((SECONDS + TIMEOUT))
while ((EXPECT == 0 || SEEN < EXPECT)); do
  if ((STOP)); then break; fi
  if ((TIMEOUT > 0 && SECONDS >= deadline)); then
    echo "$NAME: timed out after ${TIMEOUT}s" >&2
    summary
    exit 1
  fi
  rc=0
  read -r -t 1 -u "$EVENTS" _rev type kv || rc=$? # 1 s: stay responsive to signals
  if ((rc > 128)); then
    for pid in "${WATCH_PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null || { echo "$NAME: a watch ended" >&2; exit 1; }
    done
    continue
  fi
  ((rc == 0)) || { echo "$NAME: the watches ended" >&2; exit 1; }
  key=${kv%%=*} value=""
  [[ $kv == *=* ]] && value=${kv#*=}
  case $key in
    sessions.*) on_session_event "$type" "$key" ;;
    *) on_tasks_event "$type" "$key" "$value" ;;
  esac
done
summary
