#!/usr/bin/env bash
# Stops signal servers started by start.sh: only the processes listed in
# STATE_DIR/pids, and only while each PID still runs the binary recorded next
# to it (a reused PID is never hit). In reverse start order; postgres gets INT
# (fast shutdown: it does not wait for clients), the others TERM; KILL after
# HGO_SIGNALS_GRACE seconds (default 10). Then the server's own children
# (postgres backends, a redis save) that outlive it by 2 s get KILL.
#
#   cluster/signals/stop.sh STATE_DIR [KIND...]     (default: every KIND)
#
# Idempotent. Data and logs stay in STATE_DIR. Exits 1 if a process survives.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/versions.sh"

[ $# -ge 1 ] && case $1 in -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p'; exit 0 ;; esac
[ $# -ge 1 ] || { echo "usage: $0 STATE_DIR [KIND...]" >&2; exit 2; }
STATE=$1; shift
KINDS=" $* "
GRACE=${HGO_SIGNALS_GRACE:-10}
pidfile=$STATE/pids
[ -f "$pidfile" ] || { slog "nothing to stop in $STATE (no pids file)"; exit 0; }

ours() {
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  [ "${exe% (deleted)}" = "$2" ]
}
# children PID: "CHILD EXE" for each child process, to find them once PID is
# gone (postgres's call setsid(), so its process group does not hold them)
children() {
  local c exe
  for c in $(pgrep -P "$1" 2>/dev/null); do
    exe=$(readlink "/proc/$c/exe" 2>/dev/null) && echo "$c ${exe% (deleted)}"
  done
  return 0
}

declare -a pids=() names=() bins=()
while read -r pid name bin; do
  [ -n "${pid:-}" ] || continue
  pids+=("$pid"); names+=("$name"); bins+=("$bin")
done <"$pidfile"

stopped=()
for (( i=${#pids[@]}-1; i>=0; i-- )); do
  [ "$KINDS" = "  " ] || [[ $KINDS == *" ${names[i]} "* ]] || continue
  ours "${pids[i]}" "${bins[i]}" || continue
  kids=$(children "${pids[i]}")
  sig=TERM; [ "${names[i]}" = postgres ] && sig=INT
  kill "-$sig" "${pids[i]}" 2>/dev/null || true
  deadline=$(( $(date +%s) + GRACE ))
  while ours "${pids[i]}" "${bins[i]}"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      slog "${names[i]} (pid ${pids[i]}) still running ${GRACE}s after $sig; sending KILL"
      kill -KILL "${pids[i]}" 2>/dev/null || true
      for _ in $(seq 20); do ours "${pids[i]}" "${bins[i]}" || break; sleep 0.1; done
      break
    fi
    sleep 0.05
  done
  if ! ours "${pids[i]}" "${bins[i]}" && [ -n "$kids" ]; then
    for _ in $(seq 20); do
      left_kids=$(while read -r c e; do if ours "$c" "$e"; then echo "$c"; fi; done <<<"$kids")
      [ -n "$left_kids" ] || break
      sleep 0.1
    done
    for c in $left_kids; do
      slog "${names[i]}: child $c outlived it; sending KILL"
      kill -KILL "$c" 2>/dev/null || true
    done
  fi
  stopped+=("$i")
done

# Keep the lines of processes still running, read again under the lock that
# start.sh takes to append (it may have added one meanwhile).
left=0
exec 8>"$STATE/.lock"
flock 8
: >"$pidfile.tmp"
while read -r pid name bin; do
  [ -n "${pid:-}" ] || continue
  ours "$pid" "$bin" || continue
  echo "$pid $name $bin" >>"$pidfile.tmp"
  if [ "$KINDS" = "  " ] || [[ $KINDS == *" $name "* ]]; then
    slog "$name (pid $pid) is still running"
    left=1
  fi
done <"$pidfile"
mv "$pidfile.tmp" "$pidfile"
exec 8>&-
for i in "${stopped[@]}"; do slog "stopped ${names[i]} (pid ${pids[i]})"; done
exit "$left"
