# shellcheck shell=bash
# Flux's helm-controller beside source-controller and kustomize-controller
# (cluster/flux/versions.sh). Sourced by cluster/flux-build.sh and
# cluster/flux.sh after that file.
#
# v1.6.4: the helm-controller of the same Flux release line as
# source-controller and kustomize-controller v1.9.6. Its go.mod requires
# github.com/fluxcd/source-controller/api v1.9.0, the same api version that
# kustomize-controller v1.9.6 requires, and `go 1.26.0` (the machine's own Go
# builds it). It embeds Helm v4 (helm.sh/helm/v4 v4.2.4, no replace; v1.6.3
# still replaced it with Flux's fork). Every module it needs is served: no
# pin is needed.
# Not v1.4.x: v1.4.5 (the newest v1.4 served) requires source-controller/api
# v1.7.2, the Flux release before. Not v1.5.x: the Go module proxy refuses
# v1.5.0 to v1.5.4 ("403 Forbidden: This module version is not available").
# Not newer than v1.6.4: v1.6.5 to v1.6.7 and v1.7.0/v1.7.1 are refused the
# same way (and the proxy lists no versions of this module at all, so each
# was asked for by its exact number).
FLUX_HELM_CONTROLLER_VERSION=v1.6.4
# Its own folder: it is versioned apart from the other two.
FLUX_HELM_BIN=$HGO_CACHE/bin/flux-helm-controller-$FLUX_HELM_CONTROLLER_VERSION
