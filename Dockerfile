# One image per binary: docker build --build-arg BIN=command-api .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ARG BIN
RUN cargo build --release --bin ${BIN} && cp target/release/${BIN} /app

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libcurl4 && rm -rf /var/lib/apt/lists/*
COPY --from=build /app /usr/local/bin/app
USER 65534
ENTRYPOINT ["/usr/local/bin/app"]
