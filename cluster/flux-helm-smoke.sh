#!/usr/bin/env bash
# Smoke test of Flux's helm-controller on the local control plane:
#   cluster/with-cluster.sh -- cluster/flux-helm-smoke.sh
# (or, on a running cluster: source DIR/env; cluster/flux-helm-smoke.sh).
#
#  1. starts Flux with helm-controller (cluster/flux.sh start --helm);
#  2. pushes a minimal chart (cluster/flux/helm/chart: a Deployment api whose
#     image comes from values) to a local Git repository as ./chart, and
#     applies a GitRepository and a HelmRelease (cluster/flux/helm/sync.yaml:
#     intervals 10 s, target namespace helm-smoke, drift detection off);
#  3. waits for the Deployment; prints its labels and annotations, the
#     HelmRelease's status (lastAttemptedRevision, history[0]) and the
#     GitRepository's revision;
#  4. a commit changes the image in values.yaml: times the upgrade;
#  5. suspends the HelmRelease (spec.suspend: true), pushes another image
#     change, checks for three intervals that nothing changes; resumes and
#     checks that it upgrades;
#  6. drift, drift detection off: suspended, the image set by hand; resumed:
#     is it put back? (expected: no, the release is in sync with its chart);
#  7. drift, drift detection on (spec.driftDetection.mode: enabled): the
#     same; expected: the hand change is kept while suspended and taken back
#     after resume.
# Prints a PASS or FAIL line for each check, timings, and
# "flux helm smoke: N passed, N failed"; exits non-zero if any failed. A
# wait that times out fails the rest, with the objects' status and the
# controllers' last log lines.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/versions.sh"
source "$here/flux/versions.sh"
source "$here/flux/helm/versions.sh"

DIR=${HGO_CLUSTER_DIR:?run it under cluster/with-cluster.sh, or source a cluster dir env first}
NS=$FLUX_NAMESPACE
NAME=helm-smoke
APP_NS=helm-smoke
DEPLOY=api
INTERVAL=10
IMAGE=ghcr.io/terragonlabs/healing-guard
export PATH=$TOOLS_BIN:$PATH
k() { kubectl --kubeconfig="$DIR/kubeconfig" "$@"; }

T0=$(date +%s.%N)
now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }
say() { printf '[flux-helm-smoke %6ss] %s\n' "$(secs "$T0" "$(now)")" "$*"; }
TIMINGS=()
timing() { TIMINGS+=("$(printf '%-62s %7ss' "$1" "$2")"); say "$1: $2 s"; }
PASSED=0 FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*"; }
check() { # WHAT COMMAND...: PASS if the command succeeds
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then pass "$what"; else fail "$what"; fi
}

diagnose() {
  echo "----- Flux objects -----" >&2
  k -n "$NS" get gitrepositories,helmcharts,helmreleases -o wide >&2 || true
  { k -n "$NS" get helmrelease "$NAME" -o jsonpath='{.status}' 2>/dev/null; echo; } >&2 || true
  for f in source-controller helm-controller flux-git-server; do
    echo "----- last lines of $DIR/logs/$f.log -----" >&2
    tail -n 15 "$DIR/logs/$f.log" 2>/dev/null | cut -c1-400 >&2 || true
  done
}
die() {
  fail "$*"
  diagnose
  echo "flux helm smoke: $PASSED passed, $FAILED failed"
  exit 1
}

# wait_until SECONDS WHAT COMMAND...: poll every 0.2 s; fail after SECONDS.
wait_until() {
  local limit=$1 what=$2; shift 2
  local deadline; deadline=$(python3 -c "import sys; print(float(sys.argv[1]) + float(sys.argv[2]))" "$(now)" "$limit")
  until "$@" >/dev/null 2>&1; do
    python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$(now)" "$deadline" ||
      die "$what: not within ${limit}s"
    sleep 0.2
  done
}

hr_field() { k -n "$NS" get helmrelease "$NAME" -o "jsonpath=$1"; }
src_rev() { k -n "$NS" get gitrepository "$NAME" -o 'jsonpath={.status.artifact.revision}'; }
image() { k -n "$APP_NS" get deployment "$DEPLOY" -o 'jsonpath={.spec.template.spec.containers[?(@.name=="app")].image}'; }
image_is() { [ "$(image)" = "$1" ]; }
src_at() { [ "$(src_rev)" = "$1" ]; }
hr_ready_at() { # REVISION: Ready=True, the last attempt at that Git revision and the newest release from it
  [ "$(hr_field '{.status.conditions[?(@.type=="Ready")].status}')" = True ] &&
    [ "$(hr_field '{.status.lastAttemptedRevision}')" = "$(chart_version "$1")" ] &&
    [ "$(hr_field '{.status.history[0].chartVersion}')" = "$(chart_version "$1")" ]
}
# With reconcileStrategy Revision, the chart version is Chart.yaml's plus
# the commit: 0.1.0+<first 12 hex of the commit> (source-controller).
chart_version() { local sha=${1#main@sha1:}; echo "0.1.0+${sha:0:12}"; }
rolled_out() {
  local out gen obs want upd avail total
  out=$(k -n "$APP_NS" get deployment "$DEPLOY" -o \
    'jsonpath={.metadata.generation} {.status.observedGeneration} {.spec.replicas} {.status.updatedReplicas} {.status.availableReplicas} {.status.replicas}')
  read -r gen obs want upd avail total <<<"$out"
  [ "$gen" = "$obs" ] && [ "$want" = "${upd:-0}" ] && [ "$want" = "${avail:-0}" ] && [ "$want" = "${total:-0}" ]
}
show_status() {
  echo "HelmRelease $NS/$NAME status:"
  k -n "$NS" get helmrelease "$NAME" -o json | python3 -c '
import json, sys
s = json.load(sys.stdin).get("status", {})
for key in ("observedGeneration", "lastAttemptedGeneration", "lastAttemptedRevision",
            "lastAttemptedRevisionDigest", "lastAttemptedValuesChecksum", "lastAttemptedConfigDigest",
            "lastAttemptedReleaseAction", "lastHandledReconcileAt", "helmChart", "storageNamespace",
            "failures", "installFailures", "upgradeFailures"):
    if key in s:
        print(f"  {key}: {s[key]}")
for c in s.get("conditions", []):
    print("  condition %s=%s %s: %s" % (c["type"], c["status"], c.get("reason"), c.get("message", "")[:160]))
h = s.get("history", [])
print(f"  history: {len(h)} entries")
if h:
    for key, value in h[0].items():
        print(f"  history[0].{key}: {value}")
'
  echo "GitRepository $NS/$NAME status.artifact.revision: $(src_rev)"
  echo "HelmChart $NS/$(hr_field '{.status.helmChart}' | cut -d/ -f2): artifact revision $(k -n "$NS" get helmchart "$NS-$NAME" -o 'jsonpath={.status.artifact.revision}' 2>/dev/null), observedSourceArtifactRevision $(k -n "$NS" get helmchart "$NS-$NAME" -o 'jsonpath={.status.observedSourceArtifactRevision}' 2>/dev/null)"
}

# --- 1. Flux with helm-controller ---------------------------------------------
t=$(now)
"$here/flux.sh" --dir "$DIR" start --helm
timing "flux.sh start --helm (CRDs, RBAC, 4 processes ready)" "$(secs "$t" "$(now)")"
# shellcheck disable=SC1091
source "$DIR/flux.env"

# A run before this one on the same cluster: start from nothing.
if k -n "$NS" get helmrelease "$NAME" >/dev/null 2>&1; then
  say "deleting the HelmRelease and GitRepository of an earlier run (uninstalls the release)"
  k -n "$NS" delete helmrelease "$NAME" --wait --timeout=120s >/dev/null
  k -n "$NS" delete gitrepository "$NAME" --ignore-not-found --wait --timeout=60s >/dev/null
  k delete namespace "$APP_NS" --ignore-not-found --wait --timeout=120s >/dev/null
fi
rm -rf "$FLUX_GIT_ROOT/$NAME.git"

# --- 2. the chart in Git --------------------------------------------------------
url=$("$here/flux.sh" --dir "$DIR" repo "$NAME")
work=$(mktemp -d "$DIR/flux-helm-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT
g() { git -C "$work/repo" -c user.name="flux-helm-smoke" -c user.email="flux-helm-smoke@healing-guard.invalid" "$@"; }
git clone --quiet "$url" "$work/repo" 2>/dev/null
cp -r "$here/flux/helm/chart" "$work/repo/chart"
set_tag() { sed -i "s|^  tag: .*|  tag: \"$1\"|" "$work/repo/chart/values.yaml"; }
set_tag 1.4.2
g add -A
g commit --quiet -m "chart api, image $IMAGE:1.4.2"
g push --quiet origin main
rev1="main@sha1:$(g rev-parse HEAD)"
say "pushed $rev1 to $url"

sed -e "s|@REPO_URL@|$url|" -e "s|@NAME@|$NAME|g" -e "s|@TARGET_NS@|$APP_NS|" "$here/flux/helm/sync.yaml" | k apply -f - >/dev/null
t_apply=$(now)
say "applied GitRepository and HelmRelease $NS/$NAME (interval ${INTERVAL}s, target namespace $APP_NS)"

# --- 3. installed -----------------------------------------------------------------
wait_until 90 "GitRepository artifact at $rev1" src_at "$rev1"
timing "applied -> GitRepository artifact at the commit" "$(secs "$t_apply" "$(now)")"
wait_until 120 "Deployment $APP_NS/$DEPLOY created" k -n "$APP_NS" get deployment "$DEPLOY"
timing "applied -> Deployment exists" "$(secs "$t_apply" "$(now)")"
wait_until 180 "HelmRelease Ready at $rev1" hr_ready_at "$rev1"
timing "applied -> HelmRelease Ready (install done, Helm waited)" "$(secs "$t_apply" "$(now)")"
wait_until 60 "the Deployment rolled out" rolled_out

echo
echo "Deployment $APP_NS/$DEPLOY metadata.labels:"
k -n "$APP_NS" get deployment "$DEPLOY" -o jsonpath='{.metadata.labels}' | python3 -c 'import json,sys; [print(f"  {k}: {v}") for k, v in sorted(json.load(sys.stdin).items())]'
echo "Deployment $APP_NS/$DEPLOY metadata.annotations:"
k -n "$APP_NS" get deployment "$DEPLOY" -o jsonpath='{.metadata.annotations}' | python3 -c 'import json,sys; [print(f"  {k}: {v}") for k, v in sorted(json.load(sys.stdin).items())]'
echo "Deployment $APP_NS/$DEPLOY managedFields managers:"
k -n "$APP_NS" get deployment "$DEPLOY" --show-managed-fields -o jsonpath='{range .metadata.managedFields[*]}  {.manager} {.operation}{"\n"}{end}'
echo "Helm release storage (Secrets of type helm.sh/release.v1):"
k get secrets -A --field-selector type=helm.sh/release.v1 -L owner,name,status,version | sed 's/^/  /'
show_status
echo "Pods (node, phase):"
k -n "$APP_NS" get pods -o 'custom-columns=POD:.metadata.name,NODE:.spec.nodeName,PHASE:.status.phase' | sed 's/^/  /'
echo
label() { k -n "$APP_NS" get deployment "$DEPLOY" -o "jsonpath={.metadata.labels.$1}"; }
check "Deployment has label helm.toolkit.fluxcd.io/name=$NAME" [ "$(label 'helm\.toolkit\.fluxcd\.io/name')" = "$NAME" ]
check "Deployment has label helm.toolkit.fluxcd.io/namespace=$NS" [ "$(label 'helm\.toolkit\.fluxcd\.io/namespace')" = "$NS" ]
check "Deployment runs $IMAGE:1.4.2" image_is "$IMAGE:1.4.2"
check "HelmRelease lastAttemptedRevision is the chart version of $rev1 ($(chart_version "$rev1"))" \
  [ "$(hr_field '{.status.lastAttemptedRevision}')" = "$(chart_version "$rev1")" ]

# --- 4. a commit changes the image --------------------------------------------------
set_tag 1.4.3
g commit --quiet -am "api image 1.4.3"
t_push=$(now)
g push --quiet origin main
rev2="main@sha1:$(g rev-parse HEAD)"
say "pushed $rev2 (image 1.4.2 -> 1.4.3)"
wait_until $((INTERVAL * 6)) "the Deployment at 1.4.3" image_is "$IMAGE:1.4.3"
timing "push -> Deployment at the new image (upgrade)" "$(secs "$t_push" "$(now)")"
wait_until 120 "HelmRelease Ready at $rev2" hr_ready_at "$rev2"
timing "push -> HelmRelease Ready at the new revision" "$(secs "$t_push" "$(now)")"
pass "a commit to values.yaml upgrades the release (history[0].version $(hr_field '{.status.history[0].version}'), chartVersion $(hr_field '{.status.history[0].chartVersion}'))"

# --- 5. suspended: a commit does not reach the cluster; resumed: it does -----------
k -n "$NS" patch helmrelease "$NAME" --type=merge -p '{"spec":{"suspend":true}}' >/dev/null
say "suspended HelmRelease $NS/$NAME (spec.suspend=true)"
sleep 2
version_before=$(hr_field '{.status.history[0].version}')
set_tag 1.4.4
g commit --quiet -am "api image 1.4.4 (while suspended)"
g push --quiet origin main
rev3="main@sha1:$(g rev-parse HEAD)"
t_sus=$(now)
say "pushed $rev3 (image 1.4.3 -> 1.4.4) while suspended"
hold=$((INTERVAL * 3 + 5))
deadline=$(( $(date +%s) + hold ))
moved=''
while [ "$(date +%s)" -lt "$deadline" ]; do
  image_is "$IMAGE:1.4.3" || { moved=$(image); break; }
  sleep 1
done
say "after ${hold}s suspended: image $(image); GitRepository at $(src_rev); HelmRelease lastAttemptedRevision $(hr_field '{.status.lastAttemptedRevision}'), history[0].version $(hr_field '{.status.history[0].version}')"
check "suspended: the Deployment stays at 1.4.3 for $((hold))s${moved:+ (moved to $moved)}" [ -z "$moved" ]
check "suspended: the GitRepository follows Git to $rev3" src_at "$rev3"
check "suspended: the HelmRelease's lastAttemptedRevision stays $(chart_version "$rev2")" \
  [ "$(hr_field '{.status.lastAttemptedRevision}')" = "$(chart_version "$rev2")" ]
check "suspended: no new Helm release version (still $version_before)" [ "$(hr_field '{.status.history[0].version}')" = "$version_before" ]
timing "suspended, a new commit kept out (checked every 1 s for)" "$(secs "$t_sus" "$(now)")"

k -n "$NS" patch helmrelease "$NAME" --type=merge -p '{"spec":{"suspend":false}}' >/dev/null
t_resume=$(now)
say "resumed HelmRelease $NS/$NAME"
wait_until $((INTERVAL * 6)) "the Deployment at 1.4.4 after resume" image_is "$IMAGE:1.4.4"
timing "resume -> Deployment at the commit made while suspended" "$(secs "$t_resume" "$(now)")"
wait_until 120 "HelmRelease Ready at $rev3" hr_ready_at "$rev3"
timing "resume -> HelmRelease Ready at that revision" "$(secs "$t_resume" "$(now)")"
pass "resumed: upgraded to $IMAGE:1.4.4 (history[0].version $(hr_field '{.status.history[0].version}'))"
wait_until 60 "the rollout of 1.4.4" rolled_out

# --- 6/7. drift by hand while suspended, then resume -------------------------------
# drift_case MODE EXPECT: MODE is spec.driftDetection.mode; EXPECT "reverted"
# or "kept" after the resume.
drift_case() {
  local mode=$1 expect=$2 version t_edit t_res hold2 deadline2 lost=''
  k -n "$NS" patch helmrelease "$NAME" --type=merge \
    -p "{\"spec\":{\"suspend\":true,\"driftDetection\":{\"mode\":\"$mode\"}}}" >/dev/null
  say "drift, mode $mode: suspended the HelmRelease"
  sleep 2
  version=$(hr_field '{.status.history[0].version}')
  k -n "$APP_NS" set image "deployment/$DEPLOY" "app=$IMAGE:hand-edit-$mode" >/dev/null
  t_edit=$(now)
  say "drift, mode $mode: set the image by hand to $IMAGE:hand-edit-$mode"
  hold2=$((INTERVAL * 2 + 5))
  deadline2=$(( $(date +%s) + hold2 ))
  while [ "$(date +%s)" -lt "$deadline2" ]; do
    image_is "$IMAGE:hand-edit-$mode" || { lost=$(image); break; }
    sleep 1
  done
  check "drift, mode $mode: suspended, the hand change stays ${hold2}s${lost:+ (became $lost)}" [ -z "$lost" ]
  k -n "$NS" patch helmrelease "$NAME" --type=merge -p '{"spec":{"suspend":false}}' >/dev/null
  t_res=$(now)
  say "drift, mode $mode: resumed"
  local limit=$((INTERVAL * 3 + 5)) got='' t_got=''
  local dl; dl=$(( $(date +%s) + limit ))
  while [ "$(date +%s)" -lt "$dl" ]; do
    if image_is "$IMAGE:1.4.4"; then got=reverted; t_got=$(secs "$t_res" "$(now)"); break; fi
    sleep 0.5
  done
  [ -n "$got" ] || got=kept
  say "drift, mode $mode: ${limit}s after resume the image is $(image) ($got); HelmRelease history[0].version $version -> $(hr_field '{.status.history[0].version}'), lastAttemptedReleaseAction $(hr_field '{.status.lastAttemptedReleaseAction}')"
  k -n "$NS" get events --field-selector "involvedObject.kind=HelmRelease,involvedObject.name=$NAME" \
    --sort-by=.lastTimestamp -o 'custom-columns=REASON:.reason,MESSAGE:.message' 2>/dev/null | tail -n 4 | cut -c1-200 | sed 's/^/  event: /'
  [ -n "$t_got" ] && timing "drift, mode $mode: resume -> hand change taken back" "$t_got"
  check "drift, mode $mode: after resume the hand change is $expect (it was $got)" [ "$got" = "$expect" ]
  # Leave the Deployment at Git's image for the next case.
  if [ "$got" = kept ]; then
    k -n "$APP_NS" set image "deployment/$DEPLOY" "app=$IMAGE:1.4.4" >/dev/null
  fi
  wait_until 60 "the rollout back to 1.4.4" rolled_out
  # A drift correction shows as Ready=Unknown (Progressing) and Drifted=True
  # for a moment; wait for Ready again.
  wait_until 120 "HelmRelease Ready at $rev3 after the drift case" hr_ready_at "$rev3"
  say "drift, mode $mode: HelmRelease Ready again (Drifted=$(hr_field '{.status.conditions[?(@.type=="Drifted")].status}'))"
  : "$t_edit"
}
drift_case disabled kept
drift_case enabled reverted

echo
show_status
echo
echo "Timings (Flux $FLUX_VERSION, helm-controller $FLUX_HELM_CONTROLLER_VERSION, intervals ${INTERVAL}s):"
printf '  %s\n' "${TIMINGS[@]}"
printf '  %-62s %7ss\n' "whole smoke test" "$(secs "$T0" "$(now)")"
echo "flux helm smoke: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
