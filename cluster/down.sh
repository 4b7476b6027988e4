#!/usr/bin/env bash
# Stops a cluster started by up.sh: only the processes listed in DIR/pids, and
# only while each PID still runs the binary recorded next to it (so a reused
# PID is never hit). TERM first, KILL after a grace period. Idempotent.
#
#   cluster/down.sh [--dir DIR]      (default $HGO_CACHE/clusters/default)
#
# State (etcd data, logs, kubeconfig) stays in DIR until the next up.sh.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/versions.sh"

DIR=$HGO_CACHE/clusters/default
GRACE=${HGO_DOWN_GRACE:-10}
while [ $# -gt 0 ]; do
  case $1 in
    --dir) DIR=$2; shift 2 ;;
    --dir=*) DIR=${1#*=}; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
pidfile=$DIR/pids
[ -f "$pidfile" ] || { log "nothing to stop in $DIR (no pids file)"; exit 0; }

# ours PID BINARY: the process exists and runs BINARY
ours() {
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  [ "${exe% (deleted)}" = "$2" ]
}

# shellcheck source=node.sh
source "$here/node.sh"

declare -a pids=() names=() bins=()
while read -r pid name bin; do
  [ -n "${pid:-}" ] || continue
  pids+=("$pid"); names+=("$name"); bins+=("$bin")
done <"$pidfile"

# Stop in reverse start order (kwok and the controllers first, etcd last), one
# at a time, so the API server can still reach etcd while it shuts down.
stopped=()
for (( i=${#pids[@]}-1; i>=0; i-- )); do
  ours "${pids[i]}" "${bins[i]}" || continue
  # A real node's pods go while its containerd can still stop them (its
  # kubelet, started after it, is already stopped).
  case ${names[i]} in containerd-*) stop_real_node_pods "${names[i]#containerd-}" ;; esac
  kill -TERM "${pids[i]}" 2>/dev/null || true
  deadline=$(( $(date +%s) + GRACE ))
  while ours "${pids[i]}" "${bins[i]}"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "${names[i]} (pid ${pids[i]}) still running ${GRACE}s after TERM; sending KILL"
      kill -KILL "${pids[i]}" 2>/dev/null || true
      for _ in 1 2 3 4 5 6 7 8 9 10; do ours "${pids[i]}" "${bins[i]}" || break; sleep 0.1; done
      break
    fi
    sleep 0.1
  done
  stopped+=("$i")
done

left=0
: >"$pidfile.tmp"
for i in "${!pids[@]}"; do
  if ours "${pids[i]}" "${bins[i]}"; then
    echo "${pids[i]} ${names[i]} ${bins[i]}" >>"$pidfile.tmp"
    log "${names[i]} (pid ${pids[i]}) is still running"
    left=1
  fi
done
mv "$pidfile.tmp" "$pidfile"
[ "$left" = 1 ] || clean_real_nodes
for i in "${stopped[@]}"; do log "stopped ${names[i]} (pid ${pids[i]})"; done
exit "$left"
