# Multi-stage build: a small, non-root runtime image with both binaries.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins -p aftercall-worker -p aftercall-cli

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 aftercall
COPY --from=build /src/target/release/aftercall-worker /src/target/release/aftercall /usr/local/bin/
USER aftercall
ENTRYPOINT ["aftercall-worker"]
