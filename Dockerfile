# The image manifests/install/ runs: meshpilot:0.1.0.
#
#   docker build -t meshpilot:0.1.0 .
#
# Two stages: the release build, then a minimal runtime — distroless `cc` (glibc, libgcc and
# CA certificates; no shell, no package manager) running as its `nonroot` user, uid/gid 65532,
# the user the Deployment's securityContext names. scripts/build-image.sh builds the same root
# filesystem without Docker (the binary, what `ldd` says it links, that user).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN cargo build --release --locked -p meshpilot \
 && install -D -m 0755 target/release/meshpilot /out/meshpilot

# Debian 12, as the build stage, so the binary finds the glibc it was linked against.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/meshpilot /usr/local/bin/meshpilot
USER 65532:65532
# 15010: ADS (plaintext gRPC, as istiod's); 15014: /ready, /healthz, /metrics, /debug.
EXPOSE 15010 15014
ENTRYPOINT ["/usr/local/bin/meshpilot"]
CMD ["serve", "--kube", "--xds-address", "0.0.0.0:15010", "--debug-address", "0.0.0.0:15014"]
