# syntax=docker/dockerfile:1
# huddle's image, built with a container engine. `make image` builds the same
# image (linux/amd64 and linux/arm64, FROM scratch) without any engine; see
# docs/image.md. With buildx:
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     -t <registry>/huddle:0.1.0 --push .

# VERSION labels the image; keep its default equal to internal/version's
# Version (a test in internal/image checks).
ARG VERSION=0.1.0

# The builder runs on the build machine's platform and cross-compiles, which
# is much faster than compiling under emulation.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w" -o /huddle ./cmd/huddle

FROM gcr.io/distroless/static:nonroot
ARG VERSION
LABEL org.opencontainers.image.title="huddle" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/huddle-io/huddle" \
      org.opencontainers.image.description="Keeps the pods that share a ReadWriteOnce volume on the node that holds it." \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /huddle /huddle
USER 65532:65532
ENTRYPOINT ["/huddle"]
