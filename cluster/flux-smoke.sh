#!/usr/bin/env bash
# Smoke test of real Flux on the local control plane:
#   cluster/with-cluster.sh -- cluster/flux-smoke.sh
# (or, on a running cluster: source DIR/env; cluster/flux-smoke.sh).
#
#  1. starts Flux (cluster/flux.sh start) in $HGO_CLUSTER_DIR;
#  2. pushes the example stack (examples/healing-guard) to a bare repository
#     on the local Git server, and applies a GitRepository and a Kustomization
#     (cluster/flux/healing-guard-sync.yaml: interval 10 s, prune on);
#  3. waits until the Kustomization is Ready at that commit and the stack's
#     Deployments are available on the kwok nodes; prints the revision
#     (main@sha1:...) and the labels Flux puts on what it applied;
#  4. pushes a commit that changes the API Deployment's image tag and times
#     how long the Deployment takes to follow;
#  5. suspends the Kustomization, changes the image by hand, checks that Flux
#     leaves it for three sync intervals (while a new commit lands in Git),
#     then resumes it and times how long Flux takes to put Git's image back.
# Prints a table of timings at the end. Exits non-zero on the first failure,
# with the Flux objects' status and the controllers' last log lines.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
source "$here/versions.sh"
source "$here/flux/versions.sh"

DIR=${HGO_CLUSTER_DIR:?run it under cluster/with-cluster.sh, or source a cluster dir env first}
NS=$FLUX_NAMESPACE
APP_NS=healing-guard
NAME=healing-guard
INTERVAL=10
IMAGE=ghcr.io/terragonlabs/healing-guard
export PATH=$TOOLS_BIN:$PATH
k() { kubectl --kubeconfig="$DIR/kubeconfig" "$@"; }

T0=$(date +%s.%N)
now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }
say() { printf '[flux-smoke %6ss] %s\n' "$(secs "$T0" "$(now)")" "$*"; }
TIMINGS=()
timing() { TIMINGS+=("$(printf '%-62s %7ss' "$1" "$2")"); say "$1: $2 s"; }

diagnose() {
  echo "----- Flux objects -----" >&2
  k -n "$NS" get gitrepositories,kustomizations -o wide >&2 || true
  { k -n "$NS" get kustomization "$NAME" -o jsonpath='{.status}' 2>/dev/null; echo; } >&2 || true
  for f in source-controller kustomize-controller flux-git-server; do
    echo "----- last lines of $DIR/logs/$f.log -----" >&2
    tail -n 15 "$DIR/logs/$f.log" 2>/dev/null | cut -c1-400 >&2 || true
  done
}
die() { say "FAILED: $*"; diagnose; exit 1; }

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

ks_field() { k -n "$NS" get kustomization "$NAME" -o "jsonpath=$1"; }
ks_ready_at() { # REVISION: Ready=True and that revision applied
  [ "$(ks_field '{.status.conditions[?(@.type=="Ready")].status}')" = True ] &&
    [ "$(ks_field '{.status.lastAppliedRevision}')" = "$1" ]
}
api_image() { k -n "$APP_NS" get deployment "$NAME" -o 'jsonpath={.spec.template.spec.containers[?(@.name=="app")].image}'; }
image_is() { [ "$(api_image)" = "$1" ]; }
rolled_out() { # DEPLOYMENT: every replica updated and available
  local d=$1 out
  out=$(k -n "$APP_NS" get deployment "$d" -o \
    'jsonpath={.metadata.generation} {.status.observedGeneration} {.spec.replicas} {.status.updatedReplicas} {.status.availableReplicas} {.status.replicas}')
  read -r gen obs want upd avail total <<<"$out"
  [ "$gen" = "$obs" ] && [ "$want" = "${upd:-0}" ] && [ "$want" = "${avail:-0}" ] && [ "$want" = "${total:-0}" ]
}
all_rolled_out() {
  local d
  for d in $(k -n "$APP_NS" get deployments -o 'jsonpath={.items[*].metadata.name}'); do rolled_out "$d" || return 1; done
  [ -n "$(k -n "$APP_NS" get deployments -o name)" ]
}
on_kwok_nodes() { # every pod of the stack runs on a kwok node
  local nodes
  nodes=$(k -n "$APP_NS" get pods -o 'jsonpath={range .items[*]}{.spec.nodeName}{"\n"}{end}')
  [ -n "$nodes" ] && ! grep -qv '^kwok-node-' <<<"$nodes"
}

# --- 1. Flux ---------------------------------------------------------------
t=$(now)
"$here/flux.sh" --dir "$DIR" start
timing "flux.sh start (CRDs, RBAC, 3 processes ready)" "$(secs "$t" "$(now)")"
# shellcheck disable=SC1091
source "$DIR/flux.env"

# A run before this one on the same cluster: start from nothing.
if k -n "$NS" get kustomization "$NAME" >/dev/null 2>&1; then
  say "deleting the Kustomization and GitRepository of an earlier run (prune removes the stack)"
  k -n "$NS" delete kustomization "$NAME" --wait --timeout=120s >/dev/null
  k -n "$NS" delete gitrepository "$NAME" --ignore-not-found --wait --timeout=60s >/dev/null
  k delete namespace "$APP_NS" --ignore-not-found --wait --timeout=120s >/dev/null
fi
rm -rf "$FLUX_GIT_ROOT/$NAME.git"

# --- 2. the stack in Git -----------------------------------------------------
url=$("$here/flux.sh" --dir "$DIR" repo "$NAME")
work=$(mktemp -d "$DIR/flux-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT
g() { git -C "$work/repo" -c user.name="flux-smoke" -c user.email="flux-smoke@healing-guard.invalid" "$@"; }
git clone --quiet "$url" "$work/repo" 2>/dev/null
cp -r "$root/examples/healing-guard" "$work/repo/healing-guard"
g add -A
g commit --quiet -m "healing-guard stack, API at $IMAGE:1.4.2"
t=$(now)
g push --quiet origin main
timing "git push over HTTP (first commit)" "$(secs "$t" "$(now)")"
rev1="main@sha1:$(g rev-parse HEAD)"
say "pushed $rev1 to $url"

sed -e "s|@REPO_URL@|$url|" -e "s|@PATH@|./healing-guard|" "$here/flux/healing-guard-sync.yaml" | k apply -f - >/dev/null
t_apply=$(now)
say "applied GitRepository and Kustomization $NS/$NAME (interval ${INTERVAL}s, prune)"

# --- 3. deployed -------------------------------------------------------------
wait_until 90 "GitRepository artifact at $rev1" \
  sh -c "[ \"\$(kubectl --kubeconfig='$DIR/kubeconfig' -n $NS get gitrepository $NAME -o jsonpath='{.status.artifact.revision}')\" = '$rev1' ]"
timing "GitRepository applied -> artifact at the commit" "$(secs "$t_apply" "$(now)")"
wait_until 120 "Kustomization Ready at $rev1" ks_ready_at "$rev1"
timing "GitRepository applied -> Kustomization Ready" "$(secs "$t_apply" "$(now)")"
wait_until 120 "the stack's Deployments available" all_rolled_out
wait_until 30 "the stack's pods on kwok nodes" on_kwok_nodes
timing "GitRepository applied -> every Deployment available" "$(secs "$t_apply" "$(now)")"

echo
echo "Kustomization $NS/$NAME reports:"
echo "  lastAppliedRevision: $(ks_field '{.status.lastAppliedRevision}')"
echo "  Ready: $(ks_field '{.status.conditions[?(@.type=="Ready")].reason}'): $(ks_field '{.status.conditions[?(@.type=="Ready")].message}')"
echo "  artifact: $(k -n "$NS" get gitrepository "$NAME" -o jsonpath='{.status.artifact.url}')"
echo "  inventory: $(ks_field '{.status.inventory.entries[*].id}' | wc -w) objects"
echo
echo "Labels Flux put on the applied objects:"
k -n "$APP_NS" get deployments,statefulsets,services,configmaps,secrets,serviceaccounts,rolebindings \
  -l "kustomize.toolkit.fluxcd.io/name=$NAME" \
  -L kustomize.toolkit.fluxcd.io/name,kustomize.toolkit.fluxcd.io/namespace | sed 's/^/  /'
k get namespace "$APP_NS" -L kustomize.toolkit.fluxcd.io/name,kustomize.toolkit.fluxcd.io/namespace | sed 's/^/  /'
echo "Deployment $APP_NS/$NAME metadata.labels:"
k -n "$APP_NS" get deployment "$NAME" -o jsonpath='{.metadata.labels}' | python3 -c 'import json,sys; [print(f"  {k}: {v}") for k, v in sorted(json.load(sys.stdin).items())]'
echo "Pods (node):"
k -n "$APP_NS" get pods -o 'custom-columns=POD:.metadata.name,NODE:.spec.nodeName,PHASE:.status.phase' | sed 's/^/  /'
echo
[ "$(k -n "$APP_NS" get deployment "$NAME" -o 'jsonpath={.metadata.labels.kustomize\.toolkit\.fluxcd\.io/name}')" = "$NAME" ] ||
  die "the Deployment lacks kustomize.toolkit.fluxcd.io/name=$NAME"
[ "$(k -n "$APP_NS" get deployment "$NAME" -o 'jsonpath={.metadata.labels.kustomize\.toolkit\.fluxcd\.io/namespace}')" = "$NS" ] ||
  die "the Deployment lacks kustomize.toolkit.fluxcd.io/namespace=$NS"
image_is "$IMAGE:1.4.2" || die "the API runs $(api_image), not $IMAGE:1.4.2"

# --- 4. a commit changes the image tag --------------------------------------
sed -i "s|image: $IMAGE:1.4.2|image: $IMAGE:1.4.3|" "$work/repo/healing-guard/api-deployment.yaml"
g commit --quiet -am "API to $IMAGE:1.4.3"
t_push=$(now)
g push --quiet origin main
rev2="main@sha1:$(g rev-parse HEAD)"
say "pushed $rev2 (API image 1.4.2 -> 1.4.3)"
wait_until $((INTERVAL * 4)) "the Deployment at 1.4.3" image_is "$IMAGE:1.4.3"
timing "push -> Deployment spec at the new image" "$(secs "$t_push" "$(now)")"
wait_until 30 "Kustomization Ready at $rev2" ks_ready_at "$rev2"
timing "push -> Kustomization Ready at the new revision" "$(secs "$t_push" "$(now)")"
wait_until 60 "the rollout of 1.4.3" rolled_out "$NAME"
timing "push -> rollout complete (3 new pods available)" "$(secs "$t_push" "$(now)")"
say "Kustomization lastAppliedRevision: $(ks_field '{.status.lastAppliedRevision}')"

# --- 5. suspended: a hand change stays; resumed: Flux puts Git's back --------
k -n "$NS" patch kustomization "$NAME" --type=merge -p '{"spec":{"suspend":true}}' >/dev/null
say "suspended Kustomization $NS/$NAME (spec.suspend=true)"
# Flux may be in the middle of a reconcile when the patch lands: let it end.
sleep 2
k -n "$APP_NS" set image "deployment/$NAME" "app=$IMAGE:hand-edit" >/dev/null
t_edit=$(now)
say "set the image by hand to $IMAGE:hand-edit"
# A commit while suspended: the source follows Git, the Kustomization does not.
echo "suspended at $(date -u +%FT%TZ)" >"$work/repo/NOTES.md"
g add NOTES.md
g commit --quiet -m "a commit while the Kustomization is suspended"
g push --quiet origin main
rev3="main@sha1:$(g rev-parse HEAD)"
say "pushed $rev3 while suspended"
hold=$((INTERVAL * 3 + 5))
deadline=$(( $(date +%s) + hold ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  image_is "$IMAGE:hand-edit" || die "Flux changed the image to $(api_image) while suspended"
  sleep 1
done
src_rev=$(k -n "$NS" get gitrepository "$NAME" -o jsonpath='{.status.artifact.revision}')
applied=$(ks_field '{.status.lastAppliedRevision}')
say "after ${hold}s suspended: image still $(api_image); GitRepository at $src_rev; Kustomization still at $applied"
[ "$src_rev" = "$rev3" ] || die "the GitRepository did not follow Git to $rev3 while the Kustomization was suspended"
[ "$applied" = "$rev2" ] || die "the suspended Kustomization moved to $applied"
timing "hand change kept while suspended (checked every 1 s for)" "$(secs "$t_edit" "$(now)")"

k -n "$NS" patch kustomization "$NAME" --type=merge -p '{"spec":{"suspend":false}}' >/dev/null
t_resume=$(now)
say "resumed Kustomization $NS/$NAME"
wait_until $((INTERVAL * 3)) "Flux to revert the hand change" image_is "$IMAGE:1.4.3"
timing "resume -> Deployment back at Git's image (1.4.3)" "$(secs "$t_resume" "$(now)")"
wait_until 30 "Kustomization Ready at $rev3" ks_ready_at "$rev3"
timing "resume -> Kustomization Ready at the newest revision" "$(secs "$t_resume" "$(now)")"
say "Kustomization lastAppliedRevision: $(ks_field '{.status.lastAppliedRevision}')"

echo
echo "Timings (Flux $FLUX_VERSION, intervals ${INTERVAL}s):"
printf '  %s\n' "${TIMINGS[@]}"
printf '  %-62s %7ss\n' "whole smoke test" "$(secs "$T0" "$(now)")"
echo "flux smoke: 1 passed, 0 failed"
