#!/usr/bin/env bash
# The Helm chart as a user gets it, checked without a cluster (`make lint`):
#   - `helm lint --strict`: values.yaml against values.schema.json, and the
#     templates;
#   - every template renders with its optional parts on;
#   - the chart README's values table against values.yaml and the schema:
#     every leaf key listed, no key listed that values.yaml lacks, each with
#     the schema's type and values.yaml's default. A leaf is a key whose
#     schema is not a closed object (the chart's own shapes are closed and
#     listed key by key; Kubernetes objects passed through are one row).
# helm comes from the cache cluster/build.sh fills (`make build-cluster`).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=versions.sh
source "$here/versions.sh"
chart=$repo/charts/healing-guard-operator

helm=$TOOLS_BIN/helm
[ -x "$helm" ] || "$here/build.sh" tools
if [ ! -x "$helm" ]; then
  helm=$(command -v helm || true)
  [ -n "$helm" ] || { log "no helm in $TOOLS_BIN nor on PATH: run make build-cluster"; exit 1; }
fi

"$helm" lint --strict "$chart"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Every optional part on (the two monitors exclude each other: one each).
cat >"$tmp/all-on.yaml" <<'YAML'
replicas: 2
hostNetwork: true
prometheusRule: {enabled: true, serviceAlerts: true, labels: {release: prometheus}}
grafanaDashboard: {enabled: true}
networkPolicy:
  enabled: true
  ingressFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
  apiServer: {to: [{ipBlock: {cidr: 10.0.0.1/32}}]}
  dns: {to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}]}
  extraEgress: [{ports: [{port: 443, protocol: TCP}]}]
actions: {patch: [{apiGroup: acid.zalan.do, resources: [postgresqls]}]}
alertmanagerWebhook: {tokenSecret: {name: alertmanager-token}}
evidence: {captureLogs: true}
egress: {allow: ["*.svc.cluster.local"], deny: [10.0.0.0/8]}
extraArgs: [--egress-deny, 192.168.0.0/16]
extraEnv: [{name: SSL_CERT_FILE, value: /etc/healing-guard/ca/ca-certificates.crt}]
extraVolumes: [{name: ca-bundle, configMap: {name: ca-bundle}}]
extraVolumeMounts: [{name: ca-bundle, mountPath: /etc/healing-guard/ca, readOnly: true}]
topologySpreadConstraints: [{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway}]
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: healing-guard.io/operator, operator: Exists, effect: NoSchedule}]
YAML
"$helm" template check "$chart" -f "$tmp/all-on.yaml" \
  --set metrics.serviceMonitor.enabled=true --set watchNamespace=shop >/dev/null
"$helm" template check "$chart" -f "$tmp/all-on.yaml" --set metrics.podMonitor.enabled=true >/dev/null

# Every alert's runbook_url is its section of alerts.md under
# prometheusRule.runbookBaseUrl (given with a trailing slash here), and
# none is left pointing at the default.
"$helm" template check "$chart" -f "$tmp/all-on.yaml" \
  --set prometheusRule.runbookBaseUrl=https://runbooks.example.com/healing-guard/ >"$tmp/rules.yaml"
awk -v base=https://runbooks.example.com/healing-guard/alerts.md '
  /^ *- alert: / { if (alert != "") { print "no runbook_url on " alert; bad = 1 }
                   alert = $3; alerts++ }
  /^ *runbook_url: / { want = base "#" tolower(alert)
                       if ($2 != want) { print alert ": runbook_url " $2 ", not " want; bad = 1 }
                       alert = "" }
  END { if (alert != "") { print "no runbook_url on " alert; bad = 1 }
        if (alerts < 12) { print "only " alerts " alerts rendered"; bad = 1 }
        if (bad) exit 1
        print "alert rules: " alerts " alerts, each with its runbook_url under runbookBaseUrl" }
' "$tmp/rules.yaml"
if grep -n 'github.com/healing-guard/healing-guard-operator/blob/main/docs' "$tmp/rules.yaml"; then
  log "runbookBaseUrl set, yet the default docs URL is still rendered"
  exit 1
fi

# values.yaml as JSON, read by helm itself (a chart whose one template
# prints .Values), so that no YAML library is needed.
mkdir -p "$tmp/values/templates"
printf 'apiVersion: v2\nname: values\nversion: 0.0.0\n' >"$tmp/values/Chart.yaml"
cp "$chart/values.yaml" "$tmp/values/values.yaml"
echo '{{ .Values | toJson }}' >"$tmp/values/templates/values.json"
"$helm" template values "$tmp/values" --show-only templates/values.json | grep -v -e '^---' -e '^#' >"$tmp/values.json"

python3 - "$tmp/values.json" "$chart/values.schema.json" "$chart/README.md" <<'PY'
import json, re, sys

values = json.load(open(sys.argv[1]))
schema = json.load(open(sys.argv[2]))
readme_path = sys.argv[3]
readme = open(readme_path).read()
problems = []


def type_of(node):
    kind = node.get("type")
    return " or ".join(kind) if isinstance(kind, list) else kind


def closed(node):
    return (node.get("type") == "object" and "properties" in node
            and node.get("additionalProperties") is False)


def leaves(value, node, path):
    """(key, type, default) of every leaf under value, as its schema says."""
    if closed(node):
        for key in sorted(node["properties"]):
            if path == "" and key == "global":
                continue  # an umbrella chart's, not a value of this chart
            if key not in value:
                problems.append(f"values.schema.json has {path}{key}, values.yaml does not")
        for key in sorted(value):
            if key not in node["properties"]:
                problems.append(f"values.yaml has {path}{key}, values.schema.json does not")
                continue
            yield from leaves(value[key], node["properties"][key], f"{path}{key}.")
    else:
        yield path.rstrip("."), type_of(node), value


expected = {key: (kind, default) for key, kind, default in leaves(values, schema, "")}

# The table: | `key` | type | `default` | description |
listed = {}
for number, line in enumerate(readme.splitlines(), 1):
    row = re.match(r"^\|\s*`([^`]+)`\s*\|\s*([^|]*?)\s*\|\s*`([^`]*)`\s*\|", line)
    if not row:
        continue
    key, kind, default = row.groups()
    if key in listed:
        problems.append(f"README.md:{number}: {key} listed twice")
    try:
        listed[key] = (kind, json.loads(default), number)
    except json.JSONDecodeError as error:
        problems.append(f"README.md:{number}: {key}: default `{default}` is not JSON ({error})")
        listed[key] = (kind, None, number)


def row(key):
    kind, default = expected[key]
    return f"| `{key}` | {kind} | `{json.dumps(default, separators=(',', ':'))}` | DESCRIPTION |"


for key in expected:
    if key not in listed:
        problems.append(f"README.md lacks {key}; its row would be:\n    {row(key)}")
        continue
    kind, default, number = listed[key]
    if kind != expected[key][0]:
        problems.append(f"README.md:{number}: {key} is of type {expected[key][0]}, not {kind}")
    if default != expected[key][1]:
        problems.append(f"README.md:{number}: {key} defaults to {json.dumps(expected[key][1])} in values.yaml, not {json.dumps(default)}:\n    {row(key)}")
for key, (_, _, number) in listed.items():
    if key not in expected:
        problems.append(f"README.md:{number}: {key} is not a value of the chart (values.yaml)")

if problems:
    print(f"{readme_path}: the values table does not match values.yaml and values.schema.json:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    sys.exit(1)
print(f"chart README: {len(expected)} values, each listed with its type and default")
PY
