# Switchyard: one image for the worker, the analytics sink and the simulated providers.
FROM rust:1.89-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev zlib1g-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin switchyard

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/switchyard switchyard && mkdir -p /var/lib/switchyard/usage && chown -R switchyard /var/lib/switchyard
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY pipelines /etc/switchyard
USER switchyard
WORKDIR /var/lib/switchyard
ENTRYPOINT ["switchyard"]
CMD ["--help"]
