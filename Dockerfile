# syntax=docker/dockerfile:1
# The s3db-run image: built from this checkout, run as an unprivileged user.
#   docker build -t s3db-run \
#     --build-arg S3DB_BUILD_COMMIT="$(git rev-parse --short=12 HEAD)" \
#     --build-arg S3DB_BUILD_DATE="$(git log -1 --format=%cs)" .
#   docker run --rm -v "$PWD:/etc/s3db-run:ro" -p 7070:7070 s3db-run run /etc/s3db-run/s3db.yaml --listen 0.0.0.0:7070

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
ARG S3DB_BUILD_COMMIT=unknown
ARG S3DB_BUILD_DATE=unknown
RUN cargo build --release --locked \
    && cp target/release/s3db-run /usr/local/bin/s3db-run

# Debian slim rather than distroless: shell hooks need /bin/sh and the tools a hook calls; tini
# reaps the processes hooks leave behind (the runner is otherwise PID 1).
FROM debian:bookworm-slim
# Unpinned on purpose: a pinned Debian version is gone from the mirror after its next security
# update, and the build breaks; the suite (bookworm) is what is pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 s3db \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/s3db-run --create-home s3db
COPY --from=build /usr/local/bin/s3db-run /usr/local/bin/s3db-run
USER 10001:10001
WORKDIR /var/lib/s3db-run
EXPOSE 7070
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/s3db-run"]
CMD ["run", "/etc/s3db-run/s3db.yaml", "--listen", "0.0.0.0:7070"]
