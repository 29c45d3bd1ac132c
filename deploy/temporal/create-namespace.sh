#!/bin/sh
# The namespace the workers use, created once the server answers (the server image does not
# create one). Retries inside the script, so the one-shot service exits 0 only when it exists.
set -eu
NAMESPACE="${DEFAULT_NAMESPACE:-default}"
RETENTION="${NAMESPACE_RETENTION:-72h}"
for attempt in $(seq 1 60); do
  if temporal operator namespace describe -n "$NAMESPACE" >/dev/null 2>&1; then
    echo "namespace $NAMESPACE exists"; exit 0
  fi
  if temporal operator namespace create -n "$NAMESPACE" --retention "$RETENTION" >/dev/null 2>&1; then
    echo "namespace $NAMESPACE created"; exit 0
  fi
  echo "Temporal at $TEMPORAL_ADDRESS not ready ($attempt)"; sleep 2
done
echo "could not create namespace $NAMESPACE" >&2
exit 1
