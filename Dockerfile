# syntax=docker/dockerfile:1
# sipedge, sipedgectl and confnode in one static, non-root image.
#   docker build -t sipedge:dev .
#   docker run --rm --network host sipedge:dev --redis 127.0.0.1:6379
# Build stage: the module cache and build cache are BuildKit caches, so a
# rebuild after a source change downloads nothing.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
# sipgo is patched in-tree (third_party/sipgo/SIPEDGE.md): the replace needs it
COPY third_party/ third_party/
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath \
      -ldflags "-s -w -X github.com/sipedge/sipedge/internal/version.Version=${VERSION}" \
      -o /out/ ./cmd/sipedge ./cmd/sipedgectl ./cmd/confnode

# Run stage: distroless static (CA certificates, tzdata, /etc/passwd with
# nonroot = 65532, no shell, no package manager).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
COPY configs/sipedge.yaml /etc/sipedge/sipedge.yaml
USER 65532:65532
# SIP on 5060 UDP+TCP, admin HTTP (metrics, readyz) on 9060, RTP relay ports
# as set by media_ports in the config.
EXPOSE 5060/udp 5060/tcp 9060/tcp
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/sipedgectl", "health", "http://127.0.0.1:9060"]
ENTRYPOINT ["/usr/local/bin/sipedge"]
CMD ["--config", "/etc/sipedge/sipedge.yaml"]
