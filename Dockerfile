# syntax=docker/dockerfile:1
# Three images from one build, for amd64 and arm64, each a static (musl) binary on an empty base,
# run as UID:GID 65532, no shell:
#   docker buildx build --platform linux/amd64,linux/arm64 --target agent -t REPO/spot-interrupt-handler-agent:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REPO/spot-interrupt-handler:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 --target rehearsal -t REPO/spot-interrupt-handler-sim:0.1.0 .
#   docker run --rm REPO/spot-interrupt-handler-agent:0.1.0 --version
# The agent (the DaemonSet's: imds, drain, undrain) is the product built without queue mode and
# its AWS SDK; the product (the queue Deployment's) has both modes. (podman build --platform
# takes the same arguments.) The build stage runs on the builder's own platform and
# cross-compiles, exactly as scripts/build-static does without an engine; the same images are
# written as OCI layouts, without an engine, by scripts/oci-image.

FROM --platform=$BUILDPLATFORM docker.io/library/rust:1.95-bookworm AS build
ARG TARGETARCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools ca-certificates python3-pip \
 && rm -rf /var/lib/apt/lists/* \
 && pip3 install --no-cache-dir --break-system-packages cargo-zigbuild==0.24.1 ziglang==0.17.1
ENV CC_x86_64_unknown_linux_musl=musl-gcc
WORKDIR /src
COPY . .
# The agent is built with only its own feature (no queue mode, no simulators, TLS on ring),
# the product without the `rehearsal` feature: the simulators are not even compiled into either.
RUN case "$TARGETARCH" in \
      amd64) t=x86_64-unknown-linux-musl; build="cargo build" ;; \
      arm64) t=aarch64-unknown-linux-musl; build="cargo zigbuild" ;; \
      *) echo "unsupported architecture $TARGETARCH" >&2; exit 1 ;; \
    esac \
 && rustup target add "$t" \
 && mkdir -p /out/agent \
 && $build --profile agent --locked --target "$t" --no-default-features --features agent --bin spot-interrupt-handler \
 && cp "target/$t/agent/spot-interrupt-handler" /out/agent/ \
 && $build --release --locked --target "$t" --no-default-features --features queue,rehearsal \
      --bin spot-interrupt-handler --bin spot-interrupt-handler-sim \
 && cp "target/$t/release/spot-interrupt-handler" "target/$t/release/spot-interrupt-handler-sim" /out/

FROM scratch AS agent
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/agent/spot-interrupt-handler /spot-interrupt-handler
USER 65532:65532
ENTRYPOINT ["/spot-interrupt-handler"]

FROM scratch AS rehearsal
COPY --from=build /out/spot-interrupt-handler-sim /spot-interrupt-handler-sim
USER 65532:65532
ENTRYPOINT ["/spot-interrupt-handler-sim"]

# The default target, last: the product image.
FROM scratch AS product
# Webhooks and AWS calls go to HTTPS endpoints: the system's roots, as rustls-platform-verifier
# reads them.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/spot-interrupt-handler /spot-interrupt-handler
# Nothing is written to the filesystem: runs with readOnlyRootFilesystem.
USER 65532:65532
ENTRYPOINT ["/spot-interrupt-handler"]
