#!/usr/bin/env bash
# Prefect on a cluster: a Kubernetes work pool whose jobs run the replaystore image with the
# store's credentials from a Kubernetes secret, then every deployment in deploy/cluster/prefect.yaml.
#
# Needs: PREFECT_API_URL (a Prefect server or Cloud workspace), kubectl access to the namespace,
# the image from deploy/cluster/Dockerfile pushed, and the secret:
#   kubectl create secret generic replaystore-s3 --from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=...
# Then run a worker inside the cluster: prefect worker start --pool replaystore-k8s --type kubernetes
set -euo pipefail
cd "$(dirname "$0")/../.."
POOL=replaystore-k8s
TEMPLATE=$(mktemp)
prefect work-pool get-default-base-job-template --type kubernetes > "$TEMPLATE"
# Pods take the store URI from the deployment's job variables and keys from the secret, by reference.
python - "$TEMPLATE" <<'PY'
import json, sys
path = sys.argv[1]
template = json.load(open(path))
container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
container["envFrom"] = [{"secretRef": {"name": "replaystore-s3"}}]
json.dump(template, open(path, "w"), indent=2)
PY
prefect work-pool create "$POOL" --type kubernetes --base-job-template "$TEMPLATE" --overwrite
prefect --no-prompt deploy --all --prefect-file deploy/cluster/prefect.yaml
echo "deployed; start a worker in the cluster: prefect worker start --pool $POOL --type kubernetes"
