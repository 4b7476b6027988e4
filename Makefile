# The two commands of the README, and the checks around them.
.PHONY: demo test bench unit lint crds build-cluster image policy-test

## The local demo: control plane up, example stack installed, the operator at work.
demo:
	./cluster/demo.sh

## Every test: the chart's alert rules (promtool check and unit tests), unit
## tests, then the integration tests against a fresh control
## plane, then the RBAC check (every granted verb used, from the audit log);
## the API-server restart test on a control plane of its own; the GitOps
## tests with real Flux (cluster/flux.sh) and Argo CD (cluster/argocd.sh)
## on one of their own; then the
## operator as users run it: its image (make image) installed by Helm on two
## real nodes (kubelet, containerd, runc), failover and upgrade.
IMAGE_ARCHIVE = target/image/healing-guard-operator-$(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1).oci.tar
test: build-cluster image
	./cluster/check-rules.sh
	$(MAKE) policy-test
	cargo test --all-targets --no-run
	./cluster/with-cluster.sh -- sh -c 'cargo test --all-targets -- --skip apiserver_restart --skip real_node --skip gitops::gitops_ && cargo test --test rbac_audit -- --ignored --nocapture'
	./cluster/with-cluster.sh -- cargo test --test cluster -- apiserver_restart
	./cluster/with-cluster.sh -- sh -c './cluster/flux.sh start --helm >/dev/null && ./cluster/argocd.sh start >/dev/null && . "$$HGO_CLUSTER_DIR/flux.env" && . "$$HGO_CLUSTER_DIR/argocd.env" && cargo test --test cluster -- gitops::gitops_'
	HGO_REAL_NODES=2 HGO_NODE_IMAGES=$(CURDIR)/$(IMAGE_ARCHIVE) ./cluster/with-cluster.sh -- cargo test --test cluster -- real_node --nocapture

## The example policies' own tests (examples/tests/): offline, on a virtual
## clock, as a policy repository's CI runs them (see docs/policy-testing.md).
policy-test:
	cargo run --quiet --bin healing-guard-operator -- test examples/tests/*.yaml

## Benchmark (not a test): the operator against the floor (a bare pod watch),
## detection and first remediation write p50/p99 at 1,000 and 10,000 guarded
## pods, its requests per incident (audit log), memory per guarded pod, with
## 1,000 policies and 1,000 open incidents, its CPU in each phase; table on
## stdout, JSON in target/bench/latest.json. Twice, on a fresh cluster each:
## the release binary as a host process, then the operator as users run it,
## its image (make image) installed by the chart, the chart's resources, on
## one real node; the second run prints its figures beside the first's and
## adds its cgroup's (memory, throttling). HGO_BENCH_OPERATOR=host or =pod
## runs one only. The host run ends with a third round at 20,000 guarded pods
## of 30,000 (HGO_BENCH_SCALE=0 skips it): its nodes get room for 33,000 pods
## (3 x 11,000), the pod run's for 12,000 (3 x 4,000); the controller manager
## 300 requests/s, to create them in time. First, in a second and without a
## cluster, the heap one guarded pod costs in the pod stores (benches/pod_memory.rs).
## `cargo bench` builds the operator with the release settings, before the cluster starts.
HGO_BENCH_OPERATOR ?= both
BENCH_HOST = $(filter host both,$(HGO_BENCH_OPERATOR))
BENCH_POD = $(filter pod both,$(HGO_BENCH_OPERATOR))
BENCH_CLUSTER = HGO_KCM_QPS=300
bench: build-cluster $(if $(BENCH_POD),image)
	$(if $(BENCH_HOST)$(BENCH_POD),,$(error HGO_BENCH_OPERATOR is host, pod or both, not '$(HGO_BENCH_OPERATOR)'))
	cargo bench --bench pod_memory
	cargo bench --bench detection --no-run
	$(if $(BENCH_HOST),HGO_BENCH_OPERATOR=host HGO_MAX_PODS=11000 $(BENCH_CLUSTER) ./cluster/with-cluster.sh -- cargo bench --bench detection)
	$(if $(BENCH_POD),HGO_BENCH_OPERATOR=pod HGO_MAX_PODS=4000 HGO_BENCH_SCALE=0 $(BENCH_CLUSTER) HGO_REAL_NODES=1 HGO_NODE_IMAGES=$(CURDIR)/$(IMAGE_ARCHIVE) ./cluster/with-cluster.sh -- cargo bench --bench detection)

## Keep the last `make bench` run's figures as the baseline the next runs
## are compared with (commit benches/baseline.json with the work it measured);
## the run in a pod under "pod".
.PHONY: bench-baseline
bench-baseline:
	cp target/bench/figures.json benches/baseline.json

## Unit tests only (no control plane).
unit:
	cargo test --lib

## Formatting, lints, and drift of the CRDs and the field reference.
lint:
	./cluster/check-chart.sh
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo test --test crd_drift

## Regenerate the CRDs into crds/ and the chart, and the field reference
## generated from them into docs/reference/.
crds:
	cargo run --quiet -- crd > crds/healing-guard.io.yaml
	mkdir -p charts/healing-guard-operator/crds
	cp crds/healing-guard.io.yaml charts/healing-guard-operator/crds/healing-guard.io.yaml
	cargo run --quiet -- docs reference --out docs/reference > /dev/null

## The operator's image (both binaries, static, on an empty base) as an OCI
## archive, built without a container engine; its size is printed.
image:
	./cluster/image.sh

## The kubectl plugin for release: a static kubectl-healing_guard and its
## completion hook in target/dist/kubectl-healing_guard-<version>-linux-amd64.tar.gz,
## its sha256 beside it, and the krew manifest for it (plugin/krew.yaml
## rendered into target/dist/healing-guard.yaml, checked against the archive).
.PHONY: plugin-archive
plugin-archive:
	./cluster/plugin-archive.sh

## Real Flux (source- and kustomize-controller v1.9.6, built into the cache)
## against a fresh local control plane: the example stack deployed from a
## local Git repository, an image change, suspend and resume (~1 min).
.PHONY: flux-smoke
flux-smoke: build-cluster
	./cluster/with-cluster.sh -- ./cluster/flux-smoke.sh

## Build (or find cached) the control-plane binaries, kubectl and helm.
build-cluster:
	./cluster/build.sh
