# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run in a slim Debian with only the binary.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY migrations ./migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && cp target/release/forma /usr/local/bin/forma

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/forma forma
COPY --from=build /usr/local/bin/forma /usr/local/bin/forma
USER forma
WORKDIR /var/lib/forma
ENV FORMA_SERVER__HOST=0.0.0.0 \
    FORMA_LOG__FORMAT=json
EXPOSE 3000 3001
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["forma", "healthcheck"]
ENTRYPOINT ["forma"]
CMD ["serve", "--role", "all"]
