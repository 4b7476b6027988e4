# syntax=docker/dockerfile:1
# The operator as a static musl binary on distroless, running as non-root.
#   docker build -t ghcr.io/healing-guard/healing-guard-operator:0.1.0 .

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
ARG TARGET=x86_64-unknown-linux-musl
# musl-gcc compiles ring's C and assembly for the musl target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "${TARGET}"
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never
WORKDIR /build

# Dependencies first, against stub sources, so this layer is reused until
# Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/detection.rs \
 && cargo build --release --locked --target "${TARGET}" --bin healing-guard-operator \
 && rm -rf src \
    target/${TARGET}/release/healing-guard-operator* \
    target/${TARGET}/release/deps/healing_guard_operator-* \
    target/${TARGET}/release/deps/libhealing_guard_operator-* \
    target/${TARGET}/release/.fingerprint/healing-guard-operator-*

# Then the crate itself. Touch the sources: their copied mtimes may be older
# than the stub build, and cargo would then think nothing changed.
COPY src ./src
RUN find src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --target "${TARGET}" --bin healing-guard-operator \
 && cp "target/${TARGET}/release/healing-guard-operator" /healing-guard-operator

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="healing-guard-operator" \
      org.opencontainers.image.description="A Kubernetes operator that runs the incident-response runbook by itself" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/healing-guard/healing-guard-operator"
COPY --from=builder /healing-guard-operator /healing-guard-operator
USER 65532:65532
# /healthz, /readyz and /metrics.
EXPOSE 8080
ENTRYPOINT ["/healing-guard-operator"]
CMD ["run"]
