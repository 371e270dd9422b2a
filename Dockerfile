# One image per Bazaar binary: docker build --build-arg BIN=order-service .
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ARG BIN
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin "${BIN}" \
 && cp "target/release/${BIN}" /usr/local/bin/bazaar-process

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcurl4 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/bazaar-process /usr/local/bin/bazaar-process
COPY infra/demo /app/infra/demo
# The notification service's mail folder; a volume mounted here inherits the owner.
RUN mkdir -p /var/lib/bazaar/mail && chown 65532:65532 /var/lib/bazaar/mail
WORKDIR /app
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/bazaar-process"]
