# syntax=docker/dockerfile:1
# spot-interrupt-handler: a static (musl) binary on an empty base, run as UID 1000.
#   docker build -t spot-interrupt-handler .        (or: podman build -t spot-interrupt-handler .)
#   docker run --rm spot-interrupt-handler --version
# The same static build without a container engine: scripts/build-static.

FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
ENV CC_x86_64_unknown_linux_musl=musl-gcc
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin spot-interrupt-handler

FROM scratch
# Webhooks go to HTTPS endpoints (Slack): the system's roots, as rustls-platform-verifier reads them.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/spot-interrupt-handler /spot-interrupt-handler
# Nothing is written to the filesystem: runs with readOnlyRootFilesystem.
USER 1000:1000
ENTRYPOINT ["/spot-interrupt-handler"]
