#!/usr/bin/env bash
# The local demo: a real control plane, the healing-guard example stack on kwok
# nodes, its RemediationPolicies, the operator installed by Helm from its own
# image on a real node (kubelet, containerd, runc), and incidents handled by it.
#   cluster/demo.sh [--keep]    (--keep leaves the cluster and operator running)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
source "$here/versions.sh"
dir=$HGO_CACHE/clusters/demo
keep=${1:-}

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
wait_for() { # wait_for DESCRIPTION SECONDS COMMAND...
  local what=$1 limit=$2; shift 2
  for _ in $(seq 1 $((limit * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "timed out waiting for $what" >&2; return 1
}

step "Building the control plane (cached after the first run), the operator's image and the kubectl plugin"
"$here/build.sh"
"$here/image.sh"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)
archive=$repo/target/image/healing-guard-operator-$version.oci.tar
(cd "$repo" && cargo build --quiet --bin kubectl-healing_guard)

step "Starting etcd, kube-apiserver (RBAC on), controller-manager, scheduler, kwok, and a real node"
HGO_REAL_NODES=1 HGO_NODE_IMAGES=$archive "$here/up.sh" --dir "$dir"
# shellcheck disable=SC1091
source "$dir/env"
if [ "$keep" != "--keep" ]; then
  trap '"$here/signals/stop.sh" "$dir/signals" >/dev/null 2>&1 || true; "$here/down.sh" --dir "$dir" >/dev/null 2>&1 || true' EXIT
fi
show kubectl get nodes

step "Installing the CRDs and the healing-guard example stack"
kubectl apply --server-side -f "$repo/crds/healing-guard.io.yaml" >/dev/null
# kubectl wait fails outright on a CRD whose status has no conditions yet.
wait_for "the CRDs to be established" 30 kubectl wait --for=condition=Established --timeout=5s \
  crd/incidents.healing-guard.io crd/remediationpolicies.healing-guard.io
kubectl apply -k "$repo/examples/healing-guard" >/dev/null
wait_for "the stack's pods to run" 60 bash -c \
  '[ "$(kubectl -n healing-guard get pods --field-selector=status.phase=Running -o name | wc -l)" -ge 9 ]'
show kubectl -n healing-guard get deployments,statefulsets,pods -o wide

step "helm install: the operator from its image, on the real node (with its RBAC, admission policy and responder role)"
# This cluster has no kube-proxy: the operator's pod uses the node's network
# and reaches the API server on loopback, and listens on its node's address.
kubectl create namespace healing-guard-system >/dev/null
kubectl -n healing-guard-system create secret generic alertmanager-webhook \
  --from-literal=token=demo-alertmanager-token >/dev/null
metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("0.0.0.0", 0)); print(s.getsockname()[1])')
cat >"$dir/operator-values.yaml" <<YAML
image: {repository: $(cat "$archive.repository"), tag: "$version", pullPolicy: Never}
hostNetwork: true
metrics: {port: $metrics_port}
extraEnv:
- {name: KUBERNETES_SERVICE_HOST, value: 127.0.0.1}
- {name: KUBERNETES_SERVICE_PORT, value: "${HGO_APISERVER##*:}"}
nodeSelector: {healing-guard.io/real-node: "true"}
tolerations: [{key: healing-guard.io/real-node, operator: Exists, effect: NoSchedule}]
alertmanagerWebhook: {tokenSecret: {name: alertmanager-webhook, key: token}}
logLevel: warn,healing_guard_operator=info,kube_client::client::builder=off
YAML
show helm install healing-guard-operator "$repo/charts/healing-guard-operator" -n healing-guard-system \
  -f "$dir/operator-values.yaml" --wait --timeout 3m
show kubectl -n healing-guard-system get pods -o wide
pod_ip=$(kubectl -n healing-guard-system get pods -l app.kubernetes.io/name=healing-guard-operator -o jsonpath='{.items[0].status.podIP}')
HGO_METRICS=http://$pod_ip:$metrics_port/metrics
# Two people on call: "responder" (on-call engineer) and "commander" (group healing-guard:approvers).
kubectl -n healing-guard create rolebinding responders --clusterrole healing-guard-operator-responder \
  --user responder --user commander >/dev/null
as_responder=(--kubeconfig "$dir/kubeconfig-responder")
as_commander=(--kubeconfig "$dir/kubeconfig-commander")

step "Where people hear about incidents: Slack, PagerDuty, Statuspage and email"
# Slack, PagerDuty and Statuspage have no server to be had here: a loopback
# receiver answers as each documents and checks each request's schema. Email
# goes to a real SMTP server (aiosmtpd) on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
receiver_port=$(free_port)
python3 "$here/receiver.py" "$receiver_port" "$dir/messages.log" &
real_python() { "$1" -c 'import os, sys; print(os.path.realpath(sys.executable))'; }
echo "$! receiver $(real_python python3)" >>"$dir/pids"
smtp_port=$(free_port)
rm -rf "$dir/mail"
"$SMTP_VENV/bin/aiosmtpd" -n -l "127.0.0.1:$smtp_port" -c aiosmtpd.handlers.Mailbox "$dir/mail" &
echo "$! smtp $(real_python "$SMTP_VENV/bin/python")" >>"$dir/pids"
receiver=http://127.0.0.1:$receiver_port
secret() { kubectl -n healing-guard create secret generic "$@" --dry-run=client -o yaml | kubectl apply -f - >/dev/null; }
secret slack-incidents --from-literal=url="$receiver/slack/incidents"
secret slack-security --from-literal=url="$receiver/slack/security-incidents"
secret statuspage --from-literal=apiKey=demo-key --from-literal=pageId=healing-guard --from-literal=url="$receiver/statuspage"
secret smtp --from-literal=host=127.0.0.1 --from-literal=port="$smtp_port" --from-literal=tls=none
for person in john-doe jane-smith alice-johnson charlie-brown; do
  secret "pagerduty-$person" --from-literal=routingKey="$person-key" --from-literal=url="$receiver/pagerduty/$person"
done
kubectl apply -f "$repo/examples/communication/" >/dev/null
# all_ready KIND COUNT: COUNT objects of KIND, each with Ready True.
all_ready() {
  local seen
  seen=$(kubectl -n healing-guard get "$1" -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}')
  [ "$(echo "$seen" | wc -w)" -eq "$2" ] && ! echo "$seen" | grep -qv '^\(True \?\)*$'
}
wait_for "the channels to be Ready" 30 all_ready notificationchannels 8
wait_for "the escalation policy to be Ready" 30 all_ready escalationpolicies 1
show kubectl -n healing-guard get notificationchannels,escalationpolicies
echo "On call now:"
kubectl -n healing-guard get escalationpolicy healing-guard-oncall -o jsonpath='{range .status.onCall[*]}  {.role}: {.person} (until {.until}){"\n"}{end}'

step "The services the policies' probes check: a real Redis (the webhook queue) and PostgreSQL"
rm -rf "$dir/signals"
"$here/signals/start.sh" redis "$dir/signals" >/dev/null
"$here/signals/start.sh" postgres "$dir/signals" >/dev/null
# shellcheck disable=SC1091
source "$dir/signals/env"
secret redis-probe --from-literal=url="$HGO_REDIS_URL"
secret postgres-probe --from-literal=url="$HGO_POSTGRES_URL"
# The API's table, which postgres.yaml's integrity probe reads (its
# "Database Corruption" rule opens a P0 when it cannot).
"$HGO_POSTGRES_BIN/psql" "$HGO_POSTGRES_URL" -q -v ON_ERROR_STOP=1 -c \
  "CREATE TABLE IF NOT EXISTS webhook_events (id serial PRIMARY KEY, payload text NOT NULL);
   INSERT INTO webhook_events (payload) SELECT 'event ' || n FROM generate_series(1, 100) AS n;" >/dev/null
echo "Redis on $HGO_REDIS_URL, PostgreSQL on port $HGO_POSTGRES_PORT (table webhook_events, 100 rows); their URLs are in Secrets redis-probe and postgres-probe."

step "Applying the RemediationPolicies kept in Git"
# The API's probes go through its Service, which this machine cannot reach
# (kwok runs no containers): here they check the loopback stand-in instead.
for policy in "$repo"/examples/policies/*.yaml; do
  echo ---
  sed "s#http://{{ name }}.{{ namespace }}.svc#$receiver#" "$policy"
done | kubectl apply -f - >/dev/null
wait_for "the policies to be Ready" 30 bash -c \
  '[ "$(kubectl -n healing-guard get rp -o jsonpath="{.items[*].status.conditions[?(@.type==\"Ready\")].status}")" = "True True True" ]'
show kubectl -n healing-guard get remediationpolicies

step "An on-call engineer declares an incident: kubectl apply -f examples/incidents/api-outage.yaml"
kubectl apply -f "$repo/examples/incidents/api-outage.yaml" >/dev/null
wait_for "the operator to pick the incident up" 30 bash -c \
  '[ "$(kubectl -n healing-guard get inc api-outage -o jsonpath={.status.phase})" = Triggered ]'
show kubectl -n healing-guard get incidents

step "The responder acknowledges it - in their own name: the API server refuses any other"
# (A new admission policy takes a moment to be in force.)
wait_for "the admission policy to be in force" 30 bash -c \
  "! kubectl --kubeconfig '$dir/kubeconfig-responder' -n healing-guard patch incident api-outage --dry-run=server \
     --type merge -p '{\"spec\":{\"acknowledged\":{\"by\":\"commander\"}}}'"
printf '$ %s\n' "kubectl --kubeconfig kubeconfig-responder -n healing-guard patch incident api-outage --type merge -p '{\"spec\":{\"acknowledged\":{\"by\":\"commander\"}}}'"
if kubectl "${as_responder[@]}" -n healing-guard patch incident api-outage --type merge \
  -p '{"spec":{"acknowledged":{"by":"commander"}}}' 2>"$dir/refused.txt"; then
  echo "the admission policy let a forged acknowledgement through" >&2; exit 1
fi
sed 's/^/  refused: /' "$dir/refused.txt"
show kubectl "${as_responder[@]}" -n healing-guard patch incident api-outage --type merge \
  -p '{"spec":{"acknowledged":{"by":"responder","note":"On it; bridge call open in #incident-response."}}}'
wait_for "the incident to be Acknowledged" 30 bash -c \
  '[ "$(kubectl -n healing-guard get inc api-outage -o jsonpath={.status.phase})" = Acknowledged ]'
show kubectl -n healing-guard get incidents

step "The incident's record: milestones, deadlines and timeline"
kubectl -n healing-guard get incident api-outage -o jsonpath='{"detectedAt:     "}{.status.milestones.detectedAt}{"\nacknowledgedAt: "}{.status.milestones.acknowledgedAt}{"\nacknowledge by: "}{.status.sla.acknowledgeBy}{"\nresolve by:     "}{.status.sla.resolveBy}{"\n"}'
kubectl -n healing-guard get incident api-outage -o jsonpath='{range .status.timeline[*]}{.at}  {.reason}: {.message}{"\n"}{end}'
show kubectl -n healing-guard get events --field-selector involvedObject.name=api-outage

step "A bad release: the healing-guard API's new pods crash (kwok's crashloop stage stands in for the bug)"
show kubectl -n healing-guard patch deployment healing-guard --type merge \
  -p '{"spec":{"template":{"metadata":{"labels":{"healing-guard.io/inject":"crashloop"}}}}}'
wait_for "the detector to open an incident" 90 bash -c \
  'kubectl -n healing-guard get inc healing-guard-crashloop -o jsonpath={.status.evidence.capturedAt} | grep -q .'
show kubectl -n healing-guard get incidents
echo "What the detector recorded, and the evidence captured when it opened:"
kubectl -n healing-guard get incident healing-guard-crashloop -o jsonpath='{"rule:        "}{.spec.source.rule}{"\nseverity:    "}{.spec.severity}{"\noccurrences: "}{.status.detection.occurrences}{"\npods:        "}{.status.detection.affectedPods}{"\nrevision:    "}{.status.evidence.revision}{"\nhistory:     "}{.status.evidence.rolloutHistory}{"\nnotes:       "}{.status.evidence.notes}{"\n"}'

step "The operator's own rollback waits: the declared incident's approval gate holds the target"
wait_for "the detected incident to wait for the approval" 60 bash -c \
  'kubectl -n healing-guard get inc healing-guard-crashloop -o jsonpath="{.status.conditions[?(@.type==\"RemediationBlocked\")].reason}" | grep -q AwaitingApprovalOnTarget'
kubectl -n healing-guard get incident healing-guard-crashloop \
  -o jsonpath='{"RemediationBlocked: "}{.status.conditions[?(@.type=="RemediationBlocked")].message}{"\n"}'

step "The incident commander approves the rollback (spec.approvals); the operator runs it and verifies it for 30 s"
show kubectl "${as_commander[@]}" -n healing-guard patch incident api-outage --type merge \
  -p '{"spec":{"approvals":[{"step":"rollback","by":"commander"}]}}'
wait_for "the rollback to be verified and the declared incident resolved" 180 bash -c \
  'kubectl -n healing-guard get inc api-outage -o jsonpath={.status.phase} | grep -q Resolved'
show kubectl -n healing-guard get incidents
echo "The remediation ledger:"
kubectl -n healing-guard get incident api-outage -o jsonpath='{range .status.steps[*]}{.id}  {.action}  {.result}  {.changes}{"\n"}{end}'
echo "The Deployment names the incident and step that changed it:"
kubectl -n healing-guard get deployment healing-guard \
  -o jsonpath='{.metadata.annotations.healing-guard\.io/incident}{"  "}{.metadata.annotations.healing-guard\.io/remediation-step}{"\n"}'
show kubectl -n healing-guard get events --field-selector involvedObject.name=healing-guard,reason=RemediationApplied
kubectl -n healing-guard get incident api-outage -o jsonpath='{range .status.timeline[*]}{.at}  {.reason}: {.message}{"\n"}{end}'

step "The detected incident resolves by itself once its signal has stayed clear for 30 s"
wait_for "the detected incident to resolve" 120 bash -c \
  'kubectl -n healing-guard get inc healing-guard-crashloop -o jsonpath={.status.phase} | grep -q Resolved'
show kubectl -n healing-guard get incidents
kubectl -n healing-guard get incident healing-guard-crashloop -o jsonpath='{range .status.timeline[*]}{.at}  {.reason}: {.message}{"\n"}{end}'

step "Prometheus sees the API down: a real Prometheus (the chart's service rules) and Alertmanager, routing to the operator's webhook"
# The API's scrape target: a loopback stand-in serving /metrics (kwok runs
# no containers). The rules' 'for' is shortened for the demo.
api_metrics_port=$(free_port)
mkdir -p "$dir/api-metrics" "$dir/prometheus"
printf 'healing_guard_api_up 1\n' >"$dir/api-metrics/metrics"
serve_api_metrics() {
  (cd "$dir/api-metrics" && exec python3 -m http.server "$api_metrics_port" --bind 127.0.0.1 >/dev/null 2>&1) &
  api_metrics_pid=$!
}
serve_api_metrics
sed 's/^\( *\)for: .*/\1for: 5s/' "$repo/charts/healing-guard-operator/rules/service.rules.yaml" >"$dir/prometheus/service.rules.yaml"
cat >"$dir/alertmanager.yml" <<YAML
route: {receiver: operator, group_by: [alertname], group_wait: 1s, group_interval: 1s, repeat_interval: 1h}
receivers:
- name: operator
  webhook_configs:
  - url: ${HGO_METRICS%/metrics}/alertmanager
    send_resolved: true
    http_config: {authorization: {type: Bearer, credentials: demo-alertmanager-token}}
YAML
"$here/signals/start.sh" alertmanager "$dir/signals" --config "$dir/alertmanager.yml" >/dev/null
# shellcheck disable=SC1091
source "$dir/signals/env"
cat >"$dir/prometheus/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [$dir/prometheus/service.rules.yaml]
alerting: {alertmanagers: [{static_configs: [{targets: ['127.0.0.1:$HGO_ALERTMANAGER_PORT']}]}]}
scrape_configs:
- job_name: healing-guard
  static_configs:
  - targets: ['127.0.0.1:$api_metrics_port']
    labels: {namespace: healing-guard}
YAML
"$here/signals/start.sh" prometheus "$dir/signals" --config "$dir/prometheus/prometheus.yml" -- --rules.alert.resend-delay=1s >/dev/null
# shellcheck disable=SC1091
source "$dir/signals/env"
wait_for "Prometheus to scrape the API" 30 bash -c \
  "curl -fsS '$HGO_PROMETHEUS_URL/api/v1/query?query=up' | grep -q '\"1\"\]'"
echo "up{job=\"healing-guard\"} is 1. Now the API stops answering its scrape:"
kill "$api_metrics_pid"
wait_for "the alert's incident" 90 bash -c \
  'kubectl -n healing-guard get inc healing-guard-alert-api-down -o jsonpath="{.status.phase}" | grep -q .'
show kubectl -n healing-guard get incidents
# The rollback a few minutes ago started the policy's 5-minute cooldown on
# this Deployment: the safety limit holds the new incident's ladder, and says so.
wait_for "the incident to say what holds it" 30 bash -c \
  'kubectl -n healing-guard get inc healing-guard-alert-api-down -o jsonpath="{.status.conditions[?(@.type==\"RemediationBlocked\")].message}" | grep -q .'
kubectl -n healing-guard get incident healing-guard-alert-api-down -o jsonpath='{"description:        "}{.spec.description}{"\nRemediationBlocked: "}{.status.conditions[?(@.type=="RemediationBlocked")].message}{"\n"}'
echo "The API answers again: the alert resolves, which clears the incident's signal; it resolves once that holds."
serve_api_metrics
wait_for "the alert's incident to resolve" 180 bash -c \
  'kubectl -n healing-guard get inc healing-guard-alert-api-down -o jsonpath={.status.phase} | grep -q Resolved'
kill "$api_metrics_pid" 2>/dev/null || true
kubectl -n healing-guard get incident healing-guard-alert-api-down -o jsonpath='{range .status.timeline[*]}{.at}  {.reason}: {.message}{"\n"}{end}'

step "What people were told: one message per moment and channel, recorded in the Incident before it was sent"
# Every resolution told on Slack, and nothing left to send (a retry included).
wait_for "every resolution to be told" 60 bash -c \
  "[ \"\$(grep -c 'INCIDENT RESOLVED' '$dir/messages.log')\" -ge 3 ]"
wait_for "every message to be settled" 90 bash -c \
  '! kubectl -n healing-guard get inc -o jsonpath="{.items[*].status.communication.outbox[*].state}" | grep -q Pending'
echo "The receiver's log (Slack, PagerDuty, Statuspage):"
sed 's/^/  /' "$dir/messages.log"
echo "Email that reached the SMTP server:"
grep -h '^Subject:' "$dir"/mail/new/* 2>/dev/null | sed 's/^/  /' || echo "  (none)"
echo "The outbox of api-outage:"
kubectl -n healing-guard get incident api-outage -o jsonpath='{range .status.communication.outbox[*]}  {.channel}  {.key}  {.state}  attempts={.attempts}{"\n"}{end}'

step "The post-incident report (a ConfigMap owned by the Incident): kubectl healing-guard report api-outage"
PATH="$repo/target/debug:$PATH" show kubectl healing-guard -n healing-guard report api-outage

step "The operator's metrics"
curl -fsS "$HGO_METRICS" | grep -E '^healing_guard_(reconciles_total|incidents_opened_total|open_incidents|detection_latency_seconds_(sum|count)|remediation_steps_total|time_to_(acknowledge|mitigate|resolve)_seconds_(sum|count)|notifications_total|escalation_pages_total|probe_checks_total)'

if [ "$keep" = "--keep" ]; then
  step "Left running. Use it with: source $dir/env; stop it with: $here/down.sh --dir $dir"
else
  step "Done; stopping the control plane and the operator (run with --keep to leave them up)"
fi
