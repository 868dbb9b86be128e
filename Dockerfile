# syntax=docker/dockerfile:1
# Cairn: build the release binary, then run it on a slim Debian as a non-root user.
#   docker build -t cairn .
#   export CAIRN_ADMIN_KEY=cairn_$(openssl rand -hex 24)     # it listens on 0.0.0.0: a credential is required
#   docker run -p 8080:8080 -e CAIRN_ADMIN_KEY -v cairn-data:/data cairn                      # embedded SQLite in /data
#   docker run -p 8080:8080 -e CAIRN_ADMIN_KEY -e DATABASE_URL=postgres://user:pw@host/db cairn  # Postgres

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The caches keep the registry and incremental build between image builds; the
# binary is copied out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin cairn \
    && install -m 0755 target/release/cairn /usr/local/bin/cairn

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cairn \
    && useradd --system --uid 10001 --gid cairn --home-dir /data --no-create-home --shell /usr/sbin/nologin cairn \
    && mkdir -p /data \
    && chown cairn:cairn /data
COPY --from=builder /usr/local/bin/cairn /usr/local/bin/cairn
ENV CAIRN_LISTEN=0.0.0.0:8080 \
    CAIRN_DATA_DIR=/data
VOLUME /data
WORKDIR /data
USER cairn:cairn
EXPOSE 8080
ENTRYPOINT ["cairn"]
CMD ["serve"]
