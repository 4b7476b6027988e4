# syntax=docker/dockerfile:1
# The operator's image for a registry: the same layout as `make image`
# (cluster/image.sh), which builds it without a container engine. Static
# musl binaries (operator and kubectl plugin) and the CA bundle on an empty
# base; runs as 65532:65532; writes only to /tmp (mount an emptyDir there),
# so the root filesystem can be read-only.
#   docker build -t ghcr.io/healing-guard/healing-guard-operator:0.1.0 .
# The builder is pinned by digest (the digest docker resolved for
# rust:1.95-bookworm); move both together.

FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS builder
ARG TARGET=x86_64-unknown-linux-musl
# musl-gcc compiles ring's C and assembly for the musl target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "${TARGET}"
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never
WORKDIR /build

# Dependencies first, against stub sources, so this layer is reused until
# Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin benches \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > src/bin/kubectl-healing_guard.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/detection.rs \
 && cargo build --release --locked --target "${TARGET}" --bins \
 && rm -rf src \
    target/${TARGET}/release/healing-guard-operator* \
    target/${TARGET}/release/kubectl-healing_guard* \
    target/${TARGET}/release/deps/healing_guard_operator-* \
    target/${TARGET}/release/deps/kubectl_healing_guard-* \
    target/${TARGET}/release/deps/libhealing_guard_operator-* \
    target/${TARGET}/release/.fingerprint/healing-guard-operator-*

# Then the crate itself. Touch the sources: their copied mtimes may be older
# than the stub build, and cargo would then think nothing changed.
COPY src ./src
RUN find src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --target "${TARGET}" --bins \
 && mkdir -p /rootfs/etc/ssl/certs /rootfs/tmp \
 && install -m 0755 target/${TARGET}/release/healing-guard-operator target/${TARGET}/release/kubectl-healing_guard /rootfs/ \
 && install -m 0644 /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ \
 && printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' > /rootfs/etc/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' > /rootfs/etc/group \
 && chmod 1777 /rootfs/tmp

FROM scratch
LABEL org.opencontainers.image.title="healing-guard-operator" \
      org.opencontainers.image.description="A Kubernetes operator that runs the incident-response runbook by itself" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/healing-guard/healing-guard-operator"
COPY --from=builder /rootfs/ /
USER 65532:65532
# /healthz, /readyz and /metrics.
EXPOSE 8080
ENTRYPOINT ["/healing-guard-operator"]
CMD ["run"]
