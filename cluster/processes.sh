# shellcheck shell=bash
# Sourced by flux.sh and argocd.sh: the processes they start beside the
# control plane, each a line "PID NAME BINARY" in DIR/pids (as down.sh
# reads them), and the bare Git repositories their Git servers serve.
# Uses DIR and GRACE (seconds between TERM and KILL) of the caller.

# ours PID BINARY: the process exists and runs BINARY (as down.sh checks it)
ours() {
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  [ "${exe% (deleted)}" = "$2" ]
}

# running NAME: its pid from DIR/pids, if it still runs its binary
running() {
  local pid name bin
  [ -f "$DIR/pids" ] || return 1
  while read -r pid name bin; do
    [ "$name" = "$1" ] && ours "$pid" "$bin" && { echo "$pid"; return 0; }
  done <"$DIR/pids"
  return 1
}

# stop_processes LOG ENV NAME...: stops the NAMEs in reverse start order
# (LOG is the caller's log function), drops their lines from DIR/pids
# (keeping any that still run) and DIR/ENV; fails if one would not stop.
stop_processes() {
  local log=$1 env=$2
  shift 2
  local names=("$@")
  [ -f "$DIR/pids" ] || return 0
  local pid name bin left=0 deadline n
  for (( n=${#names[@]}-1; n>=0; n-- )); do
    while read -r pid name bin; do
      [ "$name" = "${names[n]}" ] || continue
      ours "$pid" "$bin" || continue
      kill -TERM "$pid" 2>/dev/null || true
      deadline=$(( $(date +%s) + GRACE ))
      while ours "$pid" "$bin"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
          "$log" "$name (pid $pid) still running ${GRACE}s after TERM; sending KILL"
          kill -KILL "$pid" 2>/dev/null || true
          sleep 0.2
          break
        fi
        sleep 0.1
      done
      if ours "$pid" "$bin"; then left=1; else "$log" "stopped $name (pid $pid)"; fi
    done <"$DIR/pids"
  done
  local keep=$DIR/pids.$$.tmp
  : >"$keep"
  while read -r pid name bin; do
    [ -n "${pid:-}" ] || continue
    case " ${names[*]} " in
      *" $name "*) ours "$pid" "$bin" || continue ;;
    esac
    echo "$pid $name $bin" >>"$keep"
  done <"$DIR/pids"
  mv "$keep" "$DIR/pids"
  rm -f "$DIR/$env"
  return "$left"
}

# bare_repo NAME ENV URL_VAR: the bare repository DIR/git/NAME.git (branch
# main), and its URL: URL_VAR of DIR/ENV when the server runs, else its path.
bare_repo() {
  local name=${1%.git} env=$2 url_var=$3
  case $name in ''|*/*|.*) echo "repo wants a plain name, got '$1'" >&2; return 2 ;; esac
  mkdir -p "$DIR/git"
  if [ ! -d "$DIR/git/$name.git" ]; then
    git init --quiet --bare --initial-branch=main "$DIR/git/$name.git"
  fi
  if [ -f "$DIR/$env" ]; then
    # shellcheck disable=SC1090
    (source "$DIR/$env" && echo "${!url_var}/$name.git")
  else
    echo "$DIR/git/$name.git"
  fi
}
