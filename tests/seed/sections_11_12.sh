#!/usr/bin/env bash
# The seed's sections 11 and 12 (docs/COOKBOOK.md), copied as written.
# Run by tests/test_seed.py in an empty working directory with a private PRONTODB_DATA_DIR; no
# broker is started by hand. Lines marked "(setup)" are not the seed's: they make the backup files
# that its recovery procedures assume exist.
set -euo pipefail

# --- 11. Multi-Environment Pattern ----------------------------------------------------------------
# Setup environment cursors
prontodb cursor set dev ./dev.db
prontodb cursor set staging ./staging.db  
prontodb cursor set prod ./prod.db

# Environment-specific deployments
prontodb --cursor dev set config.debug_mode "true"
prontodb --cursor staging set config.debug_mode "false"  
prontodb --cursor prod set config.debug_mode "false"

# Agent deployment per environment
prontodb --user dev_orchestrator --cursor dev set workflow.status "testing"
prontodb --user prod_orchestrator --cursor prod set workflow.status "production"

# --- 12. Backup and Recovery Pattern ------------------------------------------------------------
prontodb --user orchestrator --cursor main set workflow.status "running"   # (setup)

# Backup critical databases before major operations
prontodb backup --output ./backups/pre-deployment-$(date +%Y%m%d)

# Backup rotation
find ./backups -name "*.db" -mtime +7 -delete  # Keep 7 days

prontodb backup --output ./backups/last-known-good   # (setup)
prontodb backup --output ./backups/main-backup --cursor main   # (setup)
prontodb --cursor prod set config.debug_mode "broken"   # (setup: the emergency)
prontodb --cursor main set workflow.status "corrupted"   # (setup)

# Emergency recovery
prontodb backup --restore ./backups/last-known-good.db

# Selective cursor restoration
prontodb cursor delete corrupted_db
prontodb cursor set main ./backups/main-backup.db
