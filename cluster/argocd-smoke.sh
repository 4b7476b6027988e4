#!/usr/bin/env bash
# Smoke test of real Argo CD on the local control plane:
#   cluster/with-cluster.sh -- cluster/argocd-smoke.sh
# (or, on a running cluster: HGO_CLUSTER_DIR=DIR cluster/argocd-smoke.sh).
#
#  1. starts Argo CD (cluster/argocd.sh start) in $HGO_CLUSTER_DIR;
#  2. pushes a Deployment manifest (a plain directory of YAML) to a bare
#     repository on the local Git server and creates an Application
#     (directory source, automated sync, selfHeal true, destination
#     https://kubernetes.default.svc, namespace argocd-smoke);
#  3. waits until the Deployment exists and the Application is Synced at the
#     pushed commit; prints the labels and annotations Argo CD put on the
#     Deployment and the Application's status.sync.revision;
#  4. changes the Deployment's image by hand and times how long self-heal
#     takes to put Git's image back;
#  5. patches spec.syncPolicy.automated.selfHeal=false, changes the image by
#     hand again, waits 3x the controller's resync interval and checks the
#     hand-set image stays (and the Application shows OutOfSync);
#  6. patches selfHeal=true again and times how long Git's image takes to
#     come back (what an operator that toggles selfHeal relies on).
# Prints PASS/FAIL lines and a table of timings; exits non-zero on a FAIL.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/versions.sh"

DIR=${HGO_CLUSTER_DIR:?run it under cluster/with-cluster.sh, or set HGO_CLUSTER_DIR to a cluster dir}
NS=argocd
APP=argocd-smoke
APP_NS=argocd-smoke
DEPLOY=web
GIT_IMAGE=registry.k8s.io/pause:3.10
HAND_IMAGE=registry.k8s.io/pause:hand-set
export PATH=$TOOLS_BIN:$PATH
k() { kubectl --kubeconfig="$DIR/kubeconfig" "$@"; }

T0=$(date +%s.%N)
now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }
say() { printf '[argocd-smoke %6ss] %s\n' "$(secs "$T0" "$(now)")" "$*"; }
TIMINGS=()
timing() { TIMINGS+=("$(printf '%-62s %7ss' "$1" "$2")"); say "$1: $2 s"; }
FAILED=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILED=1; }

diagnose() {
  echo "----- Application -----" >&2
  k -n "$NS" get application "$APP" -o wide >&2 || true
  { k -n "$NS" get application "$APP" -o jsonpath='{.status.sync}{"\n"}{.status.health}{"\n"}{.status.conditions}{"\n"}{.status.operationState.message}' 2>/dev/null; echo; } >&2 || true
  for f in argocd-application-controller argocd-repo-server argocd-git-server; do
    echo "----- last lines of $DIR/logs/$f.log -----" >&2
    tail -n 15 "$DIR/logs/$f.log" 2>/dev/null | cut -c1-400 >&2 || true
  done
}
print_timings() {
  echo "----- timings -----"
  local l; for l in "${TIMINGS[@]}"; do echo "$l"; done
}
die() { fail "$*"; diagnose; print_timings; exit 1; }

# wait_until SECONDS WHAT COMMAND...: poll every 0.2 s; die after SECONDS.
wait_until() {
  local limit=$1 what=$2; shift 2
  local deadline; deadline=$(python3 -c "import sys; print(float(sys.argv[1]) + float(sys.argv[2]))" "$(now)" "$limit")
  until "$@" >/dev/null 2>&1; do
    python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$(now)" "$deadline" ||
      die "$what: not within ${limit}s"
    sleep 0.2
  done
}

app_field() { k -n "$NS" get application "$APP" -o "jsonpath=$1"; }
synced_at() { # SHA: Synced at that revision
  [ "$(app_field '{.status.sync.status}')" = Synced ] && [ "$(app_field '{.status.sync.revision}')" = "$1" ]
}
image() { k -n "$APP_NS" get deployment "$DEPLOY" -o 'jsonpath={.spec.template.spec.containers[0].image}'; }
image_is() { [ "$(image)" = "$1" ]; }
set_image_by_hand() { k -n "$APP_NS" set image "deployment/$DEPLOY" "app=$1" >/dev/null; }
set_self_heal() { # true|false
  k -n "$NS" patch application "$APP" --type merge \
    -p "{\"spec\":{\"syncPolicy\":{\"automated\":{\"selfHeal\":$1}}}}" >/dev/null
}

# --- 1. Argo CD --------------------------------------------------------------
t=$(now)
"$here/argocd.sh" --dir "$DIR" start
timing "argocd.sh start (CRDs, config, 4 processes ready)" "$(secs "$t" "$(now)")"
# shellcheck disable=SC1091
source "$DIR/argocd.env"
INTERVAL=$ARGOCD_APP_RESYNC

# A run before this one on the same cluster: start from nothing.
if k -n "$NS" get application "$APP" >/dev/null 2>&1; then
  say "deleting the Application of an earlier run"
  k -n "$NS" delete application "$APP" --wait --timeout=60s >/dev/null
fi
k delete namespace "$APP_NS" --ignore-not-found --wait --timeout=120s >/dev/null
rm -rf "$ARGOCD_GIT_ROOT/$APP.git"

# --- 2. a Deployment in Git, an Application ----------------------------------
url=$("$here/argocd.sh" --dir "$DIR" repo "$APP")
work=$(mktemp -d "$DIR/argocd-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT
g() { git -C "$work/repo" -c user.name="argocd-smoke" -c user.email="argocd-smoke@healing-guard.invalid" "$@"; }
git clone --quiet "$url" "$work/repo" 2>/dev/null
mkdir -p "$work/repo/app"
cat >"$work/repo/app/deployment.yaml" <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $DEPLOY
  namespace: $APP_NS
spec:
  replicas: 1
  selector:
    matchLabels: {app: $DEPLOY}
  template:
    metadata:
      labels: {app: $DEPLOY}
    spec:
      containers:
      - name: app
        image: $GIT_IMAGE
EOF
g add -A
g commit --quiet -m "web Deployment at $GIT_IMAGE"
t=$(now)
g push --quiet origin main
timing "git push over HTTP (first commit)" "$(secs "$t" "$(now)")"
sha=$(g rev-parse HEAD)
say "pushed $sha to $url"

t=$(now)
k apply -f - >/dev/null <<EOF
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: $APP
  namespace: $NS
spec:
  project: default
  source:
    repoURL: $url
    targetRevision: main
    path: app
    directory: {recurse: false}
  destination:
    server: $ARGOCD_DEST_SERVER
    namespace: $APP_NS
  syncPolicy:
    automated: {prune: true, selfHeal: true}
    syncOptions: [CreateNamespace=true]
EOF
wait_until 120 "the Deployment created by Argo CD" k -n "$APP_NS" get deployment "$DEPLOY"
timing "Application created -> Deployment exists" "$(secs "$t" "$(now)")"
wait_until 120 "Application Synced at $sha" synced_at "$sha"
timing "Application created -> Synced at the commit" "$(secs "$t" "$(now)")"
if image_is "$GIT_IMAGE"; then pass "Argo CD deployed the Deployment from Git (image $GIT_IMAGE)"; else fail "image is $(image), want $GIT_IMAGE"; fi
pass "Application Synced, status.sync.revision=$(app_field '{.status.sync.revision}')"
say "health: $(app_field '{.status.health.status}')"
echo "----- what Argo CD put on deployment/$DEPLOY -----"
echo "labels:      $(k -n "$APP_NS" get deployment "$DEPLOY" -o jsonpath='{.metadata.labels}')"
k -n "$APP_NS" get deployment "$DEPLOY" -o json | python3 -c '
import json, sys
a = json.load(sys.stdin)["metadata"].get("annotations", {})
for key in sorted(a):
    v = a[key]
    print(f"annotation:  {key}={v if len(v) < 120 else v[:117] + chr(46)*3}")'
tracking=$(k -n "$APP_NS" get deployment "$DEPLOY" -o 'jsonpath={.metadata.annotations.argocd\.argoproj\.io/tracking-id}')
if [ "$tracking" = "$APP:apps/Deployment:$APP_NS/$DEPLOY" ]; then
  pass "tracking annotation argocd.argoproj.io/tracking-id=$tracking"
else
  fail "tracking annotation is '$tracking', want $APP:apps/Deployment:$APP_NS/$DEPLOY"
fi

# --- 3. self-heal on -----------------------------------------------------------
t=$(now)
set_image_by_hand "$HAND_IMAGE"
say "image set by hand to $HAND_IMAGE (selfHeal=true)"
wait_until 120 "self-heal put $GIT_IMAGE back" image_is "$GIT_IMAGE"
healed=$(secs "$t" "$(now)")
timing "image changed by hand -> self-heal restored Git's image" "$healed"
pass "self-heal restored $GIT_IMAGE after ${healed}s"
wait_until 60 "Application Synced again" synced_at "$sha"

# --- 4. self-heal off ----------------------------------------------------------
set_self_heal false
[ "$(app_field '{.spec.syncPolicy.automated.selfHeal}')" = false ] || die "selfHeal did not become false"
t=$(now)
set_image_by_hand "$HAND_IMAGE"
say "selfHeal=false; image set by hand to $HAND_IMAGE; waiting $(( 3 * INTERVAL ))s (3x the ${INTERVAL}s resync)"
outofsync_in() { [ "$(app_field '{.status.sync.status}')" = OutOfSync ]; }
wait_until 60 "Application OutOfSync after the hand change" outofsync_in
timing "image changed by hand -> Application OutOfSync (selfHeal off)" "$(secs "$t" "$(now)")"
sleep "$(python3 -c "import sys; print(max(0.0, 3 * float(sys.argv[1]) - (float(sys.argv[3]) - float(sys.argv[2]))))" "$INTERVAL" "$t" "$(now)")"
if image_is "$HAND_IMAGE"; then
  pass "with selfHeal=false the hand-set image stayed for $(secs "$t" "$(now)")s (3x ${INTERVAL}s); sync status $(app_field '{.status.sync.status}')"
else
  fail "with selfHeal=false the image changed to $(image) within $(secs "$t" "$(now)")s"
fi

# --- 5. self-heal on again -----------------------------------------------------
t=$(now)
set_self_heal true
wait_until 120 "Git's image back after selfHeal=true" image_is "$GIT_IMAGE"
timing "selfHeal patched back to true -> Git's image restored" "$(secs "$t" "$(now)")"
pass "selfHeal=true again restored $GIT_IMAGE"
wait_until 60 "Application Synced again" synced_at "$sha"
say "status.sync.revision=$(app_field '{.status.sync.revision}') status.sync.status=$(app_field '{.status.sync.status}') health=$(app_field '{.status.health.status}')"

print_timings
if [ "$FAILED" = 0 ]; then echo "PASS: argocd-smoke"; else echo "FAIL: argocd-smoke"; diagnose; exit 1; fi
