# shellcheck shell=bash
# Flux's controllers for the local control plane, and where their build is
# cached. Sourced by cluster/flux-build.sh and cluster/flux.sh (after
# cluster/versions.sh, which sets HGO_CACHE and the Go caches).
#
# v1.9.6 of both: the newest that builds here. v1.10.1 does not: both need
# github.com/fluxcd/pkg/spiffe v0.2.0, which the Go module proxy refuses (it
# lists no version of that module), and their go.mod says go 1.27.0.
FLUX_VERSION=v1.9.6
FLUX_SOURCE_CONTROLLER_VERSION=$FLUX_VERSION
FLUX_KUSTOMIZE_CONTROLLER_VERSION=$FLUX_VERSION
# source-controller v1.9.6 requires github.com/fluxcd/pkg/artifact v0.18.3,
# which the proxy refuses; v0.18.0 is served and builds (same minor).
FLUX_SOURCE_ARTIFACT_PIN=v0.18.0
# The Go that builds them. Both go.mod files say `go 1.26.0`, and with the
# pins above no module they use asks for more, so the machine's own go1.26.8
# builds both (tried: 2.5 min each, warm module cache). GOTOOLCHAIN=go1.27.3
# (the one newer Go the module proxy serves here, 76 MB) builds them too, but
# is not needed for v1.9.6; a newer Flux may need it (set it here, and every
# shell that builds them then needs the same).
FLUX_GOTOOLCHAIN=${FLUX_GOTOOLCHAIN:-local}
FLUX_NAMESPACE=flux-system

FLUX_BIN=$HGO_CACHE/bin/flux-$FLUX_VERSION
