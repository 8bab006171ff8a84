#!/usr/bin/env bash
# End-to-end check on a real (kind) cluster: the path a user walks, start to image.
#
#   hack/e2e-kind.sh            # create a cluster, build, install, generate, clean up
#   KEEP=1 hack/e2e-kind.sh     # leave the cluster running afterwards
#
# Needs docker, kind, kubectl, helm and curl, and a few GB of disk and memory: the
# runner image is a CUDA PyTorch image, and the default model (stabilityai/sd-turbo,
# about 5 GB in fp32 on the CPU) is downloaded from the Hugging Face Hub by the
# pipeline's fetch init container. The kind node has no GPU: the runner uses the CPU.
# These development machines have no container engine, so this script is the
# real-cluster check; the tests only parse it (bash -n, shellcheck).
#
# After the image, an edit phase changes the Service port, removes an env entry,
# grows the claim and switches storage.deletePolicy, checking each on the cluster.
#
# Variables: CLUSTER (kind cluster name), E2E_MODEL (Hugging Face repo id, a
# text-to-image checkpoint with safetensors weights), E2E_TIMEOUT (wait for Ready),
# LOCAL_PORT (port-forward), E2E_OUTPUT (where the image goes, default .cache/e2e-image.png),
# KEEP (1: do not delete the cluster), E2E_KEDA (0: skip the KEDA phase, see below).
#
# KEDA phase (docs/scaling.md), after the first image: installs KEDA, its HTTP add-on
# and a Prometheus that scrapes the runner pods, turns on scale to zero for the same
# pipeline (minReplicas 0, maxReplicas 1: the model stays on its claim, nothing is
# downloaded again), waits for the ScaledObject to be Ready and the pipeline to go to
# zero, then sends a request to the unchanged Service name from a pod in the cluster
# and checks it is held through the cold start and answered 200, printing how long the
# first image after idle took.
set -euo pipefail

CLUSTER="${CLUSTER:-kubediffusers-e2e}"
E2E_MODEL="${E2E_MODEL:-stabilityai/sd-turbo}"
E2E_TIMEOUT="${E2E_TIMEOUT:-45m}"
LOCAL_PORT="${LOCAL_PORT:-18080}"
KEEP="${KEEP:-0}"
E2E_KEDA="${E2E_KEDA:-1}"
E2E_OUTPUT="${E2E_OUTPUT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.cache/e2e-image.png}"
TAG="e2e"
OPERATOR_IMAGE="kubediffusers/operator:${TAG}"
RUNNER_IMAGE="kubediffusers/runner:${TAG}"
SYSTEM_NAMESPACE="kubediffusers-system"
NAMESPACE="e2e"
PIPELINE="e2e-text-to-image"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d)"
PORT_FORWARD_PID=""

log() { printf '\n==> %s\n' "$*"; }

# until WHAT CMD...: run CMD every 2 s until it succeeds, for at most 3 minutes.
until_ok() {
  local what="$1"
  shift
  for _ in $(seq 1 90); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 2
  done
  echo "e2e-kind: not reached in 3 minutes: ${what}" >&2
  return 1
}
ipl_patch() { kubectl patch inferencepipeline -n "${NAMESPACE}" "${PIPELINE}" --type merge -p "$1"; }
jsonpath() { kubectl get -n "${NAMESPACE}" "$1" -o "jsonpath=$2"; }
service_port_is() { [[ "$(jsonpath "svc/${PIPELINE}" '{.spec.ports[*].port}')" == "$1" ]]; }
runner_env_has() { jsonpath "deploy/${PIPELINE}" '{.spec.template.spec.containers[0].env[*].name}' | tr ' ' '\n' | grep -qx "$1"; }
runner_env_lacks() { ! runner_env_has "$1"; }
claim_owned() { [[ -n "$(jsonpath "pvc/${PIPELINE}-models" '{.metadata.ownerReferences[*].uid}')" ]]; }
claim_not_owned() { ! claim_owned; }
storage_reason() { jsonpath "inferencepipeline/${PIPELINE}" '{.status.conditions[?(@.type=="StorageReady")].reason}'; }
storage_reported() {
  [[ -n "$(storage_reason)" ]] &&
    [[ "$(jsonpath "inferencepipeline/${PIPELINE}" '{.status.observedGeneration}')" == "$(jsonpath "inferencepipeline/${PIPELINE}" '{.metadata.generation}')" ]]
}

cleanup() {
  local rc=$?
  if [[ -n "${PORT_FORWARD_PID}" ]]; then
    kill "${PORT_FORWARD_PID}" 2>/dev/null || true
  fi
  if [[ ${rc} -ne 0 ]] && kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
    log "failed (exit ${rc}): what the cluster says"
    kubectl get inferencepipelines,deployments,pods,pvc -A -o wide || true
    kubectl get scaledobjects,httpscaledobjects,hpa -A 2>/dev/null || true
    kubectl describe inferencepipeline -n "${NAMESPACE}" "${PIPELINE}" || true
    kubectl logs -n "${SYSTEM_NAMESPACE}" deploy/kubediffusers --tail=100 || true
    kubectl logs -n "${NAMESPACE}" "deploy/${PIPELINE}" --all-containers --tail=100 || true
  fi
  if [[ "${KEEP}" == "1" ]]; then
    log "KEEP=1: cluster ${CLUSTER} left running (kind delete cluster --name ${CLUSTER})"
  else
    log "deleting kind cluster ${CLUSTER}"
    kind delete cluster --name "${CLUSTER}" >/dev/null 2>&1 || true
  fi
  rm -rf "${WORK}"
  exit "${rc}"
}
trap cleanup EXIT INT TERM

for tool in docker kind kubectl helm curl; do
  command -v "${tool}" >/dev/null || { echo "e2e-kind: ${tool} is required" >&2; exit 2; }
done

log "creating kind cluster ${CLUSTER}"
if ! kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
  kind create cluster --name "${CLUSTER}" --wait 120s
fi
kubectl config use-context "kind-${CLUSTER}"

log "building ${OPERATOR_IMAGE} and ${RUNNER_IMAGE}"
docker build -f "${ROOT}/Dockerfile.operator" -t "${OPERATOR_IMAGE}" "${ROOT}"
docker build -f "${ROOT}/Dockerfile.runner" -t "${RUNNER_IMAGE}" "${ROOT}"

log "loading the images into the cluster"
kind load docker-image --name "${CLUSTER}" "${OPERATOR_IMAGE}" "${RUNNER_IMAGE}"

log "installing the chart (both namespaces enforce the restricted Pod Security Standard)"
for ns in "${SYSTEM_NAMESPACE}" "${NAMESPACE}"; do
  kubectl create namespace "${ns}" --dry-run=client -o yaml | kubectl apply -f -
  kubectl label namespace "${ns}" --overwrite pod-security.kubernetes.io/enforce=restricted
done
helm upgrade --install kubediffusers "${ROOT}/charts/kubediffusers" \
  --namespace "${SYSTEM_NAMESPACE}" \
  --set fullnameOverride=kubediffusers \
  --set image.repository=kubediffusers/operator --set image.tag="${TAG}" \
  --set runner.image.repository=kubediffusers/runner --set runner.image.tag="${TAG}" \
  --set logLevel=debug \
  --wait --timeout 5m
kubectl rollout status -n "${SYSTEM_NAMESPACE}" deploy/kubediffusers --timeout 3m

log "applying a text-to-image pipeline for ${E2E_MODEL} on the CPU"
cat >"${WORK}/pipeline.yaml" <<YAML
apiVersion: kubediffusers.io/v1alpha1
kind: InferencePipeline
metadata:
  name: ${PIPELINE}
  namespace: ${NAMESPACE}
spec:
  task: text-to-image
  model:
    id: ${E2E_MODEL}
    dtype: float32
  storage:
    size: 15Gi
  resources:
    requests:
      cpu: "1"
      memory: 4Gi
  runner:
    env:
      - name: KUBEDIFFUSERS_DEVICE
        value: cpu
YAML
kubectl apply -f "${WORK}/pipeline.yaml"
kubectl get inferencepipeline -n "${NAMESPACE}" "${PIPELINE}"

log "waiting up to ${E2E_TIMEOUT} for phase Ready (download, load, warm-up)"
kubectl wait inferencepipeline -n "${NAMESPACE}" "${PIPELINE}" \
  --for=jsonpath='{.status.phase}'=Ready --timeout "${E2E_TIMEOUT}"
kubectl get inferencepipeline -n "${NAMESPACE}" "${PIPELINE}" -o wide

log "port-forwarding svc/${PIPELINE} to localhost:${LOCAL_PORT}"
kubectl port-forward -n "${NAMESPACE}" "svc/${PIPELINE}" "${LOCAL_PORT}:80" >"${WORK}/port-forward.log" 2>&1 &
PORT_FORWARD_PID=$!
for _ in $(seq 1 30); do
  if curl -fsS "http://127.0.0.1:${LOCAL_PORT}/readyz" >/dev/null 2>&1; then break; fi
  sleep 1
done

log "generating an image"
curl -fsS "http://127.0.0.1:${LOCAL_PORT}/text-to-image" \
  -H 'Content-Type: application/json' -H 'Accept: image/png' \
  -d '{"prompt": "a lighthouse at dusk", "num_inference_steps": 1, "guidance_scale": 0, "width": 256, "height": 256, "seed": 42}' \
  -o "${WORK}/image.png"
if [[ "$(head -c 8 "${WORK}/image.png" | od -An -tx1 | tr -d ' \n')" != "89504e470d0a1a0a" ]]; then
  echo "e2e-kind: the answer is not a PNG image" >&2
  exit 1
fi
mkdir -p "$(dirname "${E2E_OUTPUT}")"
cp "${WORK}/image.png" "${E2E_OUTPUT}"
log "OK: ${E2E_OUTPUT} ($(wc -c <"${WORK}/image.png") bytes)"

# ---- edit phase: ordinary spec edits on a real API server (server-side apply field
# ownership, immutable claim fields, owner references under admission)

log "edit: service.port 80 -> 8080 (the old port goes, no duplicate \"http\")"
ipl_patch '{"spec":{"service":{"port":8080}}}'
until_ok "Service on port 8080 only" service_port_is 8080

log "edit: add then remove a runner env entry"
ipl_patch '{"spec":{"runner":{"env":[{"name":"KUBEDIFFUSERS_DEVICE","value":"cpu"},{"name":"E2E_EDIT","value":"1"}]}}}'
until_ok "E2E_EDIT in the Deployment" runner_env_has E2E_EDIT
ipl_patch '{"spec":{"runner":{"env":[{"name":"KUBEDIFFUSERS_DEVICE","value":"cpu"}]}}}'
until_ok "E2E_EDIT removed from the Deployment" runner_env_lacks E2E_EDIT

log "edit: grow the claim 15Gi -> 16Gi (kind's local-path class cannot expand: StorageResizeRejected; an expanding class: Resizing, then AsSpecified)"
ipl_patch '{"spec":{"storage":{"size":"16Gi"}}}'
until_ok "StorageReady reported for the new size" storage_reported
kubectl get inferencepipeline -n "${NAMESPACE}" "${PIPELINE}" \
  -o jsonpath='{.status.conditions[?(@.type=="StorageReady")]}{"\n"}'

log "edit: storage.deletePolicy Delete -> Retain -> Delete (the claim's owner reference goes and comes back)"
ipl_patch '{"spec":{"storage":{"deletePolicy":"Retain"}}}'
until_ok "claim without owner reference" claim_not_owned
ipl_patch '{"spec":{"storage":{"deletePolicy":"Delete"}}}'
until_ok "claim owned by the pipeline again" claim_owned
kubectl get inferencepipeline -n "${NAMESPACE}" "${PIPELINE}" -o wide
log "OK: edits applied"

# ---- KEDA phase (E2E_KEDA=1): autoscaling and scale to zero

if [[ "${E2E_KEDA}" != "1" ]]; then
  log "E2E_KEDA=${E2E_KEDA}: skipping the KEDA phase"
  exit 0
fi

log "KEDA phase: installing KEDA, its HTTP add-on and a Prometheus that scrapes the runner pods"
kill "${PORT_FORWARD_PID}" 2>/dev/null || true
PORT_FORWARD_PID=""
helm repo add kedacore https://kedacore.github.io/charts >/dev/null
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null
helm repo update >/dev/null
helm upgrade --install keda kedacore/keda --namespace keda --create-namespace --wait --timeout 5m
helm upgrade --install http-add-on kedacore/keda-add-ons-http --namespace keda --wait --timeout 5m
cat >"${WORK}/prometheus-values.yaml" <<'YAML'
alertmanager: {enabled: false}
kube-state-metrics: {enabled: false}
prometheus-node-exporter: {enabled: false}
prometheus-pushgateway: {enabled: false}
server:
  persistentVolume: {enabled: false}
  global: {scrape_interval: 5s, evaluation_interval: 5s}
extraScrapeConfigs: |
  - job_name: kubediffusers-runners
    kubernetes_sd_configs: [{role: pod}]
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name, __meta_kubernetes_pod_container_port_name]
        regex: kubediffusers-runner;http
        action: keep
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
YAML
helm upgrade --install prometheus prometheus-community/prometheus --namespace monitoring --create-namespace \
  -f "${WORK}/prometheus-values.yaml" --wait --timeout 5m
helm upgrade kubediffusers "${ROOT}/charts/kubediffusers" --namespace "${SYSTEM_NAMESPACE}" --reuse-values \
  --set autoscaling.prometheusAddress=http://prometheus-server.monitoring.svc.cluster.local \
  --wait --timeout 5m
kubectl rollout status -n "${SYSTEM_NAMESPACE}" deploy/kubediffusers --timeout 3m

log "turning on scale to zero for ${PIPELINE}"
kubectl patch inferencepipeline -n "${NAMESPACE}" "${PIPELINE}" --type merge \
  -p '{"spec": {"autoscaling": {"minReplicas": 0, "maxReplicas": 1, "cooldownSeconds": 60, "coldStartTimeoutSeconds": 1800}}}'
kubectl wait inferencepipeline -n "${NAMESPACE}" "${PIPELINE}" \
  --for=jsonpath='{.status.conditions[?(@.type=="Autoscaling")].status}'=True --timeout 5m
kubectl get scaledobject,httpscaledobject,hpa -n "${NAMESPACE}"
if [[ "$(kubectl get service -n "${NAMESPACE}" "${PIPELINE}" -o jsonpath='{.spec.type}')" != "ExternalName" ]]; then
  echo "e2e-kind: the Service ${PIPELINE} does not point at the interceptor" >&2
  exit 1
fi
URL="$(kubectl get inferencepipeline -n "${NAMESPACE}" "${PIPELINE}" -o jsonpath='{.status.url}')"

log "waiting for the idle pipeline to go to zero replicas"
kubectl wait inferencepipeline -n "${NAMESPACE}" "${PIPELINE}" --for=jsonpath='{.spec.replicas}'=0 --timeout 10m
kubectl wait inferencepipeline -n "${NAMESPACE}" "${PIPELINE}" --for=jsonpath='{.status.readyReplicas}'=0 --timeout 5m

log "a request at zero replicas, to ${URL} (held by the interceptor until a replica is ready)"
cat >"${WORK}/wake.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: e2e-wake
  namespace: ${NAMESPACE}
spec:
  restartPolicy: Never
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: curl
      image: curlimages/curl:8.10.1
      args: ["-sS", "-m", "1800", "-o", "/dev/null", "-w", "%{http_code} %{time_total}\\n",
             "-H", "Content-Type: application/json",
             "-d", '{"prompt": "a lighthouse at dusk", "num_inference_steps": 1, "guidance_scale": 0, "width": 256, "height": 256}',
             "${URL}/text-to-image"]
      securityContext:
        allowPrivilegeEscalation: false
        capabilities: {drop: [ALL]}
YAML
kubectl apply -f "${WORK}/wake.yaml"
kubectl wait pod -n "${NAMESPACE}" e2e-wake --for=jsonpath='{.status.phase}'=Succeeded --timeout 35m
ANSWER="$(kubectl logs -n "${NAMESPACE}" e2e-wake)"
kubectl delete pod -n "${NAMESPACE}" e2e-wake --wait=false >/dev/null
if [[ "${ANSWER%% *}" != "200" ]]; then
  echo "e2e-kind: the request at zero replicas got ${ANSWER}" >&2
  exit 1
fi
log "OK: scale to zero; the first image after idle took ${ANSWER#* }s (status ${ANSWER%% *})"
