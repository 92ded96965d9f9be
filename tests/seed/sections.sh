#!/usr/bin/env bash
# The seed's sections 1 to 10 (docs/COOKBOOK.md), copied as written.
# Only the variables the seed leaves to its reader are given values, and one line (marked) takes
# worker1 offline so that section 5's recovery loop has an orphan to hand back.
# Run by tests/test_seed.py with a private PRONTODB_DATA_DIR; no broker is started by hand.
set -uo pipefail

ID=42
TASK_ID=task_7
TASK_COUNT=12
AVG_TIME=3.5
ERROR_RATE=0.01
THROUGHPUT=120
AGENT_COUNT=4

# --- 1. Task Distribution Pattern ---------------------------------------------------------------
# Initialize workflow
prontodb --user orchestrator --cursor main set workflow.status "initializing"
prontodb --user orchestrator --cursor main set workflow.total_tasks 100
prontodb --user orchestrator --cursor main set workflow.completed 0

# Create task queue
for i in {1..100}; do
  prontodb --user orchestrator --cursor tasks set queue.task_$i "pending"
done

# Worker registration and heartbeat
prontodb --user worker1 --cursor main set agents.worker1.status "active" 
prontodb --user worker1 --cursor main set agents.worker1.last_seen "$(date)"
prontodb --user worker1 --cursor main set agents.worker1.capabilities "processing,analysis"

# Atomic task claiming pattern
prontodb --user worker1 --cursor tasks get queue.task_1
if [ $? -eq 0 ]; then
  prontodb --user worker1 --cursor tasks set claimed.task_1 "worker1:$(date)"
  prontodb --user worker1 --cursor tasks del queue.task_1
fi

# --- 2. State Synchronization Pattern -----------------------------------------------------------
# Update progress with atomic increments
CURRENT=$(prontodb --user orchestrator --cursor main get workflow.completed)
NEW_COUNT=$((CURRENT + 1))
prontodb --user orchestrator --cursor main set workflow.completed $NEW_COUNT

# Progress reporting
PROGRESS=$((NEW_COUNT * 100 / 100))  # Assuming 100 total tasks
prontodb --user orchestrator --cursor main set workflow.progress_percent $PROGRESS

# Broadcast critical status changes
prontodb --user orchestrator --cursor main set broadcast.message "System maintenance in 5 minutes"
prontodb --user orchestrator --cursor main set broadcast.timestamp "$(date)"
prontodb --user orchestrator --cursor main set broadcast.priority "high"

# --- 3. Resource Coordination Pattern -----------------------------------------------------------
# Initialize resource pools
prontodb --user resources --cursor allocation set pools.cpu_cores 8
prontodb --user resources --cursor allocation set pools.memory_gb 32
prontodb --user resources --cursor allocation set pools.gpu_units 2

# Resource allocation
prontodb --user worker1 --cursor allocation set requests.worker1.cpu_cores 2
prontodb --user worker1 --cursor allocation set requests.worker1.memory_gb 4

# Check availability before allocation
AVAILABLE_CPU=$(prontodb --user resources --cursor allocation get pools.cpu_cores)
REQUESTED_CPU=$(prontodb --user worker1 --cursor allocation get requests.worker1.cpu_cores)

if [ $AVAILABLE_CPU -ge $REQUESTED_CPU ]; then
  NEW_AVAILABLE=$((AVAILABLE_CPU - REQUESTED_CPU))
  prontodb --user resources --cursor allocation set pools.cpu_cores $NEW_AVAILABLE
  prontodb --user resources --cursor allocation set allocated.worker1.cpu_cores $REQUESTED_CPU
fi

# --- 4. Pipeline Processing Pattern -------------------------------------------------------------
# Stage definitions
prontodb --user orchestrator --cursor main set pipeline.stages "ingest,process,analyze,output"
prontodb --user orchestrator --cursor main set pipeline.current_stage "ingest"

# Stage-specific queues
prontodb --user ingest_worker --cursor tasks set stage.ingest.item_$ID "ready"
prontodb --user process_worker --cursor tasks get stage.ingest.item_$ID
prontodb --user process_worker --cursor tasks set stage.process.item_$ID "processing"

# Track items through pipeline
prontodb --user monitor --cursor logs set pipeline.item_$ID.stage "process"
prontodb --user monitor --cursor logs set pipeline.item_$ID.started "$(date)"
prontodb --user monitor --cursor logs set pipeline.item_$ID.worker "process_worker"

# --- 5. Fault Tolerance Pattern -----------------------------------------------------------------
# Worker heartbeat (run every 30 seconds)
prontodb --user worker1 --cursor main set heartbeat.worker1 "$(date +%s)"

# Orchestrator health check
LAST_HEARTBEAT=$(prontodb --user orchestrator --cursor main get heartbeat.worker1)
CURRENT_TIME=$(date +%s)
if [ $((CURRENT_TIME - LAST_HEARTBEAT)) -gt 90 ]; then
  echo "Worker1 appears offline"
  prontodb --user orchestrator --cursor main set agents.worker1.status "offline"
fi

# (not in the seed) worker1 stops answering, so its claim is an orphan:
prontodb --user orchestrator --cursor main set agents.worker1.status "offline"

# Detect orphaned tasks and reassign
prontodb --user orchestrator --cursor tasks scan claimed | while IFS='=' read -r key value; do
  WORKER=$(echo $value | cut -d':' -f1)
  CLAIM_TIME=$(echo $value | cut -d':' -f2)
  
  WORKER_STATUS=$(prontodb --user orchestrator --cursor main get agents.$WORKER.status)
  if [ "$WORKER_STATUS" = "offline" ]; then
    TASK_ID=$(echo $key | sed 's/claimed\.//')
    prontodb --user orchestrator --cursor tasks set queue.$TASK_ID "pending"
    prontodb --user orchestrator --cursor tasks del $key
  fi
done

# --- 6. Dynamic Scaling Pattern -----------------------------------------------------------------
# Monitor queue depth
QUEUE_SIZE=$(prontodb --user orchestrator --cursor tasks keys queue | wc -l)
ACTIVE_WORKERS=$(prontodb --user orchestrator --cursor main keys agents | grep status | wc -l)

if [ $QUEUE_SIZE -gt $((ACTIVE_WORKERS * 10)) ]; then
  prontodb --user orchestrator --cursor main set scaling.action "scale_up"
  prontodb --user orchestrator --cursor main set scaling.target_workers $((ACTIVE_WORKERS + 2))
fi

# --- 10. Audit Trail Pattern --------------------------------------------------------------------
# Log all significant actions
LOG_ENTRY="$(date):worker1:task_completed:$TASK_ID:success"
prontodb --user monitor --cursor logs set audit.$(date +%s) "$LOG_ENTRY"

# Decision point logging
DECISION="$(date):orchestrator:scale_decision:queue_depth=$QUEUE_SIZE:action=scale_up"
prontodb --user monitor --cursor logs set decisions.$(date +%s) "$DECISION"

# --- 7. Session Management Pattern ---------------------------------------------------------------
# Create session cache (1-hour expiry)
prontodb create-cache sessions.active 3600

# Agent session tracking
prontodb set sessions.active.worker1 "active:task_processing:$(date)"
prontodb set sessions.active.monitor "active:health_check:$(date)"

# Sessions auto-expire after 1 hour

# Temporary coordination cache (5-minute expiry)
prontodb create-cache coordination.temp 300

# Quick status updates
prontodb set coordination.temp.pause_requests "worker1,worker2"
prontodb set coordination.temp.priority_shift "high_memory_tasks"

# --- 8. Rate Limiting Pattern ------------------------------------------------------------------
# Rate limit cache (1-minute windows)
prontodb create-cache rate_limits.api 60

# Track API calls per worker
CURRENT_CALLS=$(prontodb get rate_limits.api.worker1_calls 2>/dev/null || echo "0")
if [ $CURRENT_CALLS -lt 100 ]; then
  NEW_CALLS=$((CURRENT_CALLS + 1))
  prontodb set rate_limits.api.worker1_calls $NEW_CALLS
  # Proceed with API call
else
  echo "Rate limit exceeded, waiting..."
  sleep 1
fi

# --- 9. Metrics Collection Pattern (its writes and reads; TTL and claims come later) -------------
# Worker performance tracking
prontodb --user monitor --cursor logs set metrics.worker1.tasks_completed $TASK_COUNT
prontodb --user monitor --cursor logs set metrics.worker1.avg_task_time $AVG_TIME
prontodb --user monitor --cursor logs set metrics.worker1.error_rate $ERROR_RATE

# System-wide metrics
prontodb --user monitor --cursor logs set metrics.system.total_throughput $THROUGHPUT
prontodb --user monitor --cursor logs set metrics.system.active_agents $AGENT_COUNT

# Generate status report
echo "=== System Status ==="
prontodb --user orchestrator --cursor main get workflow.status
echo "Progress: $(prontodb --user orchestrator --cursor main get workflow.progress_percent)%"
echo "Active Workers: $(prontodb --user orchestrator --cursor main keys agents | grep status | wc -l)"
echo "Queue Depth: $(prontodb --user orchestrator --cursor tasks keys queue | wc -l)"

# Monitoring System Integration (the export, without the curl)
METRICS=$(prontodb --user monitor --cursor logs scan metrics)
echo "metrics: [$METRICS]"
