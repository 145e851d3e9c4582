# sipp load generator image for docker-compose (Debian's sip-tester), built
# once instead of installing sipp with apt at every start.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends sip-tester \
    && rm -rf /var/lib/apt/lists/*
USER 65532:65532
ENTRYPOINT ["sipp"]
