#!/usr/bin/env bash
# Create the process work pool (idempotent) and register every deployment in deploy/prefect.yaml.
# Needs PREFECT_API_URL pointing at a Prefect server (`prefect server start`); run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
POOL=replaystore  # the pool named in deploy/prefect.yaml
prefect work-pool create "$POOL" --type process --overwrite
prefect --no-prompt deploy --all --prefect-file deploy/prefect.yaml
echo "deployed; start a worker with: prefect worker start --pool $POOL"
