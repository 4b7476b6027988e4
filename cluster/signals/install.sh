#!/usr/bin/env bash
# Makes the signal servers' binaries available without installing them:
# `apt-get download PKG=VERSION` + `dpkg -x` into $HGO_CACHE/signals/PKG-VERSION/,
# so no service starts, no postinst runs and nothing in /etc changes. Shared
# libraries the machine lacks (redis needs libjemalloc2 and liblzf1) are
# unpacked next to them, and bin/ gets wrappers that set LD_LIBRARY_PATH.
# PostgreSQL: the machine's postgresql-15 is used if installed. Debian's
# alertmanager gets its compiled-in template folder patched (patch_alertmanager).
#
#   cluster/signals/install.sh [redis|postgres|prometheus|alertmanager|shellcheck ...]
#
# Default: the four servers (shellcheck only when named). Prints where each
# binary is. A second run only checks (a few ms). Safe to run concurrently.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/versions.sh"

want=()
while [ $# -gt 0 ]; do
  case $1 in
    redis|postgres|prometheus|alertmanager|shellcheck) want+=("$1"); shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#want[@]} -gt 0 ] || want=(redis postgres prometheus alertmanager)
STRICT=${HGO_SIGNALS_STRICT:-0}
PG_SOURCE=${HGO_SIGNALS_PG_SOURCE:-auto}   # auto | system | deb
case $PG_SOURCE in auto|system|deb) ;; *) echo "HGO_SIGNALS_PG_SOURCE: auto, system or deb, not '$PG_SOURCE'" >&2; exit 2 ;; esac

# ---- fast path: everything asked for is already there -----------------------
home_of() {
  case $1 in
    redis) echo "$REDIS_HOME" ;; postgres) echo "$POSTGRES_HOME" ;;
    prometheus) echo "$PROMETHEUS_HOME" ;; alertmanager) echo "$ALERTMANAGER_HOME" ;;
    shellcheck) echo "$SHELLCHECK_HOME" ;;
  esac
}
bins_of() {
  case $1 in
    redis) echo "redis-server redis-cli" ;;
    postgres) echo "postgres initdb pg_ctl psql pg_isready pg_dump pg_restore" ;;
    prometheus) echo "prometheus promtool" ;;
    alertmanager) echo "alertmanager amtool" ;;
    shellcheck) echo "shellcheck" ;;
  esac
}
# ready COMPONENT: unpacked, and every binary runs (a dangling symlink, e.g. to
# a postgresql-15 since removed, does not count)
ready() {
  local home b; home=$(home_of "$1")
  [ -e "$home/.complete" ] || return 1
  for b in $(bins_of "$1"); do [ -x "$home/bin/$b" ] || return 1; done
}
report() {
  local c b home
  for c in "${want[@]}"; do
    home=$(home_of "$c")
    for b in $(bins_of "$c"); do printf '%-13s %s\n' "$b" "$home/bin/$b"; done
    [ -s "$home/NOTE" ] && sed "s/^/  note: /" "$home/NOTE"
  done
  return 0
}
all_ready() { local c; for c in "${want[@]}"; do ready "$c" || return 1; done; }
if all_ready; then report; exit 0; fi

mkdir -p "$SIGNALS_CACHE"
exec 9>"$SIGNALS_CACHE/.install.lock"
flock 9   # another install.sh may be unpacking the same thing
if all_ready; then report; exit 0; fi

tmp=$(mktemp -d "$SIGNALS_CACHE/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# apt_download SPEC: fetch one .deb (PKG or PKG=VERSION) into $tmp/debs and
# print its path. Runs `apt-get update` once per run if the lists lack it (a
# file marks it: this runs in $(...) subshells).
apt_download() {
  local spec=$1 out
  mkdir -p "$tmp/debs"
  rm -f "$tmp/debs/"*.deb
  if ! out=$(cd "$tmp/debs" && apt-get download -q "$spec" 2>&1); then
    if [ ! -e "$tmp/apt-updated" ]; then
      slog "apt-get download $spec failed; running apt-get update once"
      apt-get update -q >"$tmp/apt-update.log" 2>&1 || { cat "$tmp/apt-update.log" >&2; return 1; }
      touch "$tmp/apt-updated"
      out=$(cd "$tmp/debs" && apt-get download -q "$spec" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }
    else
      printf '%s\n' "$out" >&2
      return 1
    fi
  fi
  local f; f=$(ls "$tmp/debs/"*.deb)
  mv "$f" "$tmp/"
  echo "$tmp/$(basename "$f")"
}

# unpack STAGE DEST PKG VERSION: download PKG=VERSION (or, if the mirror no
# longer has it, the candidate version, noted in STAGE/NOTE) and dpkg -x it
# into STAGE/DEST (root: the programs, lib: libraries the machine lacks).
# Records PKG in STAGE/.unpacked and its Depends in STAGE/.depends.
unpack() {
  local stage=$1 dest=$2 pkg=$3 ver=${4:-} deb got
  if [ -n "$ver" ]; then
    if ! deb=$(apt_download "$pkg=$ver"); then
      if [ "$STRICT" = 1 ]; then
        slog "$pkg=$ver is not in the mirror (HGO_SIGNALS_STRICT=1): update cluster/signals/versions.sh"
        return 1
      fi
      deb=$(apt_download "$pkg") || return 1
    fi
  else
    deb=$(apt_download "$pkg") || return 1
  fi
  got=$(dpkg-deb -f "$deb" Version)
  if [ -n "$ver" ] && [ "$got" != "$ver" ]; then
    slog "WARNING: $pkg=$ver is no longer in the mirror; using $got (update cluster/signals/versions.sh)"
    echo "$pkg: pinned $ver, unpacked $got (the mirror no longer has the pin)" >>"$stage/NOTE"
  fi
  slog "unpacking $pkg $got"
  dpkg -x "$deb" "$stage/$dest"
  echo "$pkg" >>"$stage/.unpacked"
  echo "$pkg $got" >>"$stage/VERSIONS"
  dpkg-deb -f "$deb" Depends | tr ',' '\n' >>"$stage/.depends"
  rm -f "$deb"
}

installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

# libdirs STAGE: folders under STAGE/lib that hold shared libraries, ':'-joined
libdirs() {
  [ -d "$1/lib" ] || return 0
  find "$1/lib" \( -name '*.so' -o -name '*.so.*' \) \( -type f -o -type l \) -printf '%h\n' 2>/dev/null |
    sort -u | paste -sd: -
}

# missing_libs STAGE FILE...: the sonames ldd cannot find for these ELF files
missing_libs() {
  local stage=$1 f ld; shift
  ld=$(libdirs "$stage")
  for f in "$@"; do
    [ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
    LD_LIBRARY_PATH=$ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ldd "$f" 2>/dev/null |
      awk '/=> not found/ {print $1}'
  done | sort -u
}

# resolve_libs STAGE FILE...: unpack the library packages (lib*) the unpacked
# packages depend on and the machine lacks, until ldd finds every library
resolve_libs() {
  local stage=$1 missing dep name new pin round p; shift
  for round in 1 2 3 4 5; do
    missing=$(missing_libs "$stage" "$@")
    [ -z "$missing" ] && return 0
    new=0
    while read -r dep; do
      name=${dep%%|*}; name=${name%%(*}; name=${name%%:*}; name=$(echo "$name" | tr -d ' ')
      case $name in lib*) ;; *) continue ;; esac
      case " $SIGNALS_LIB_SKIP " in *" $name "*) continue ;; esac
      grep -qx "$name" "$stage/.unpacked" && continue
      installed "$name" && continue
      pin=
      for p in $SIGNALS_LIB_PINS; do [ "${p%%=*}" = "$name" ] && pin=${p#*=}; done
      unpack "$stage" lib "$name" "$pin"
      new=1
    done < <(sort -u "$stage/.depends")
    if [ "$new" = 0 ]; then
      slog "round $round: still missing $(echo "$missing" | paste -sd' ' -) and no library package left to unpack"
      return 1
    fi
  done
  missing=$(missing_libs "$stage" "$@")
  [ -z "$missing" ] || { slog "still missing: $missing"; return 1; }
}

# link_bins HOME NAME=PATH...: HOME/bin/NAME runs HOME/PATH (PATH relative to
# the final root). A symlink if no library was unpacked into HOME/lib, else a
# wrapper that sets LD_LIBRARY_PATH.
link_bins() {
  local home=$1 pair name target ld; shift
  mkdir -p "$home/bin"
  ld=$(libdirs "$home")
  for pair in "$@"; do
    name=${pair%%=*}; target=${pair#*=}
    case $target in /*) ;; *) target=$home/root/$target ;; esac
    [ -x "$target" ] || { slog "$target is missing from the package"; return 1; }
    rm -f "$home/bin/$name"
    if [ -z "$ld" ] || [[ $target != "$home"/* ]]; then
      ln -s "$target" "$home/bin/$name"
    else
      cat >"$home/bin/$name" <<EOF
#!/bin/sh
# Written by cluster/signals/install.sh: libraries the machine lacks are in lib/.
LD_LIBRARY_PATH='$ld'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
exec '$target' "\$@"
EOF
      chmod 755 "$home/bin/$name"
    fi
  done
}

# install_debs COMPONENT HOME "PKG=VER ..." NAME=PATH...: the generic path.
# If HOOK is set, HOOK HOME runs last, before .complete.
install_debs() {
  local comp=$1 home=$2 specs=$3 spec stage pair files=(); shift 3
  local t0; t0=$(date +%s%N)
  slog "installing $comp into $home"
  rm -rf "$home"
  stage=$tmp/$comp
  mkdir -p "$stage/root"
  : >"$stage/.unpacked"; : >"$stage/.depends"; : >"$stage/VERSIONS"
  for spec in $specs; do unpack "$stage" root "${spec%%=*}" "${spec#*=}"; done
  for pair in "$@"; do files+=("$stage/root/${pair#*=}"); done
  resolve_libs "$stage" "${files[@]}"
  mv "$stage" "$home"
  link_bins "$home" "$@"
  [ -z "${HOOK:-}" ] || "$HOOK" "$home"
  touch "$home/.complete"
  slog "$comp installed in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

install_redis() {
  install_debs redis "$REDIS_HOME" "redis-server=$REDIS_DEB_VERSION redis-tools=$REDIS_DEB_VERSION" \
    redis-server=usr/bin/redis-server redis-cli=usr/bin/redis-cli
}

install_prometheus() {
  install_debs prometheus "$PROMETHEUS_HOME" "prometheus=$PROMETHEUS_DEB_VERSION" \
    prometheus=usr/bin/prometheus promtool=usr/bin/promtool
}

# Debian's alertmanager reads its default notification templates (and UI) from
# /usr/share/prometheus/alertmanager, a path compiled in: without
# default.tmpl there it rejects every config. The binary gets that string
# replaced by one as long, relative to the working folder
# ("./////////////////////alertmanager", Go cleans the slashes), and
# bin/alertmanager runs it from the package's usr/share/prometheus.
patch_alertmanager() {
  local home=$1 bin=$1/root/usr/bin/prometheus-alertmanager n
  n=$(python3 - "$bin" <<'PY'
import sys
path = sys.argv[1]
old = b"/usr/share/prometheus/alertmanager"
new = b"." + b"/" * (len(old) - len(b"alertmanager") - 1) + b"alertmanager"
assert len(new) == len(old)
data = open(path, "rb").read()
count = data.count(old)
open(path + ".tmp", "wb").write(data.replace(old, new))
print(count)
PY
)
  [ "$n" -ge 1 ] || { slog "alertmanager: the template path to patch is not in $bin"; return 1; }
  chmod 755 "$bin.tmp"
  mv "$bin.tmp" "$bin"
  [ -f "$home/root/usr/share/prometheus/alertmanager/default.tmpl" ] ||
    { slog "alertmanager: the package has no default.tmpl"; return 1; }
  rm -f "$home/bin/alertmanager"
  cat >"$home/bin/alertmanager" <<EOF
#!/bin/sh
# Written by cluster/signals/install.sh: Debian's alertmanager, patched to read
# its templates from ./alertmanager (see install.sh). Relative paths in the
# arguments are relative to that folder: give absolute ones.
cd '$home/root/usr/share/prometheus' || exit 1
exec '$bin' "\$@"
EOF
  chmod 755 "$home/bin/alertmanager"
  echo "prometheus-alertmanager: binary patched ($n places) to read /usr/share/prometheus/alertmanager from ./alertmanager" >>"$home/NOTE"
}

install_alertmanager() {
  HOOK=patch_alertmanager install_debs alertmanager "$ALERTMANAGER_HOME" "prometheus-alertmanager=$ALERTMANAGER_DEB_VERSION" \
    alertmanager=usr/bin/prometheus-alertmanager amtool=usr/bin/amtool
}

install_shellcheck() {
  install_debs shellcheck "$SHELLCHECK_HOME" "shellcheck=$SHELLCHECK_DEB_VERSION" shellcheck=usr/bin/shellcheck
}

install_postgres() {
  local sys=/usr/lib/postgresql/$POSTGRES_MAJOR/bin b pairs=()
  for b in $(bins_of postgres); do pairs+=("$b=usr/lib/postgresql/$POSTGRES_MAJOR/bin/$b"); done
  local all_there=yes
  for b in $(bins_of postgres); do [ -x "$sys/$b" ] || all_there=no; done
  if [ "$PG_SOURCE" != deb ] && [ "$all_there" = yes ]; then
    local v; v=$(dpkg-query -W -f='${Version}' "postgresql-$POSTGRES_MAJOR" 2>/dev/null || echo unknown)
    slog "using the machine's postgresql-$POSTGRES_MAJOR $v ($sys)"
    rm -rf "$POSTGRES_HOME"
    mkdir -p "$POSTGRES_HOME/bin"
    for b in $(bins_of postgres); do ln -s "$sys/$b" "$POSTGRES_HOME/bin/$b"; done
    echo "postgresql-$POSTGRES_MAJOR $v (installed on the machine, $sys)" >"$POSTGRES_HOME/VERSIONS"
    [ "$v" = "$POSTGRES_DEB_VERSION" ] ||
      echo "the machine's postgresql-$POSTGRES_MAJOR is $v, versions.sh pins $POSTGRES_DEB_VERSION" >"$POSTGRES_HOME/NOTE"
    touch "$POSTGRES_HOME/.complete"
    return 0
  fi
  [ "$PG_SOURCE" = system ] && { slog "HGO_SIGNALS_PG_SOURCE=system but $sys has no postgres"; return 1; }
  # libpq5 comes through resolve_libs if the machine lacks it. The server finds
  # its share/ and lib/ relative to its own path, so the unpacked tree runs
  # where it is.
  install_debs postgres "$POSTGRES_HOME" \
    "postgresql-$POSTGRES_MAJOR=$POSTGRES_DEB_VERSION postgresql-client-$POSTGRES_MAJOR=$POSTGRES_DEB_VERSION" \
    "${pairs[@]}"
}

for c in "${want[@]}"; do
  ready "$c" || "install_$c"
done
report
