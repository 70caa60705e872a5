# spillway's container image: the gateway (`spillway`) and the mock provider (`spillway-mock`),
# built in a Rust image and run from a small Debian one as an unprivileged user.
#
#   docker build -t spillway .
#   docker run -p 8080:8080 -e SPILLWAY_CLIENT_KEY=... -e GROQ_API_KEY=... \
#     -v $PWD/spillway.toml:/etc/spillway/spillway.toml:ro spillway

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p spillway -p spillway-mock --bins

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/spillway --create-home spillway
COPY --from=build /src/target/release/spillway /usr/local/bin/spillway
COPY --from=build /src/target/release/spillway-mock /usr/local/bin/spillway-mock
COPY proxy/examples/docker.toml /etc/spillway/spillway.toml
USER spillway
WORKDIR /var/lib/spillway
EXPOSE 8080
ENTRYPOINT ["spillway"]
CMD ["serve", "--config", "/etc/spillway/spillway.toml"]
