#!/usr/bin/env bash
# Makes a throwaway CA and a server certificate it signed, for a signal server
# started with --tls (start.sh) or for a test that needs a CA the server does
# not use. With the openssl CLI; P-256 keys, valid for 30 days.
#
#   cluster/signals/tls.sh DIR [--ca-only] [--name CN]
#
# DIR gets ca.crt and ca.key (CN "hgo signals test CA", or --name), and
# unless --ca-only server.crt and server.key (0600) for the names localhost
# and 127.0.0.1 (subjectAltName), and nothing else. Files already in DIR are
# kept, so a restarted server keeps its certificate. Prints the CA's path.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/versions.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p'; }
[ $# -ge 1 ] && case $1 in -h|--help) usage; exit 0 ;; esac
[ $# -ge 1 ] || { usage >&2; exit 2; }
DIR=$1; shift
CA_ONLY=0 NAME='hgo signals test CA'
while [ $# -gt 0 ]; do
  case $1 in
    --ca-only) CA_ONLY=1; shift ;;
    --name) NAME=$2; shift 2 ;;    --name=*) NAME=${1#*=}; shift ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v openssl >/dev/null || { echo "tls.sh needs the openssl CLI" >&2; exit 1; }

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
# openssl's chatter goes to a log next to the files, shown on failure
log=$DIR/openssl.log
quiet() { "$@" >>"$log" 2>&1 || { cat "$log" >&2; echo "failed: $*" >&2; exit 1; }; }

if [ ! -s "$DIR/ca.crt" ]; then
  quiet openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$DIR/ca.key" -out "$DIR/ca.crt" -days 30 -subj "/CN=$NAME" \
    -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign'
  chmod 600 "$DIR/ca.key"
fi
if [ "$CA_ONLY" = 0 ] && [ ! -s "$DIR/server.crt" ]; then
  # rustls (webpki) wants a leaf: subjectAltName, not a CA, for serverAuth
  printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=critical,CA:FALSE' \
    'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' >"$DIR/server.ext"
  quiet openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$DIR/server.key" -out "$DIR/server.csr" -subj /CN=localhost
  quiet openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 30 -extfile "$DIR/server.ext" -out "$DIR/server.crt"
  chmod 600 "$DIR/server.key"
  rm -f "$DIR/server.csr" "$DIR/server.ext"
fi
echo "$DIR/ca.crt"
