# syntax=docker/dockerfile:1
# Two images from one build, each a static (musl) binary on an empty base, run as UID 1000:
#   docker build -t spot-interrupt-handler .                            (the agent and controller)
#   docker build --target rehearsal -t spot-interrupt-handler-sim .    (simulators and demo)
#   docker run --rm spot-interrupt-handler --version
# (podman build takes the same arguments.) The same static builds without a container
# engine, with the check that the product binary holds none of the simulators: scripts/build-static.

FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
ENV CC_x86_64_unknown_linux_musl=musl-gcc
WORKDIR /src
COPY . .
# The product is built without the `rehearsal` feature: the simulators are not even compiled.
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --no-default-features --bin spot-interrupt-handler \
 && cargo build --release --locked --target x86_64-unknown-linux-musl --bin spot-interrupt-handler-sim

FROM scratch AS rehearsal
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/spot-interrupt-handler-sim /spot-interrupt-handler-sim
USER 1000:1000
ENTRYPOINT ["/spot-interrupt-handler-sim"]

# The default target, last: the product image.
FROM scratch AS product
# Webhooks go to HTTPS endpoints (Slack): the system's roots, as rustls-platform-verifier reads them.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/spot-interrupt-handler /spot-interrupt-handler
# Nothing is written to the filesystem: runs with readOnlyRootFilesystem.
USER 1000:1000
ENTRYPOINT ["/spot-interrupt-handler"]
