# Two images from one build: tsinject (control plane) and tsinject-proxy
# (data plane). Static binaries on distroless, non-root.
#   docker build --target tsinject       -t tsinject:dev .
#   docker build --target tsinject-proxy -t tsinject-proxy:dev .
FROM golang:1.26 AS build
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOTOOLCHAIN=local go build -trimpath \
    -ldflags "-s -w -X github.com/tsinject/tsinject/internal/version.Version=${VERSION}" \
    -o /out/ ./cmd/tsinject ./cmd/tsinject-proxy

FROM gcr.io/distroless/static-debian12:nonroot AS tsinject
COPY --from=build /out/tsinject /usr/local/bin/tsinject
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tsinject"]

FROM gcr.io/distroless/static-debian12:nonroot AS tsinject-proxy
COPY --from=build /out/tsinject-proxy /usr/local/bin/tsinject-proxy
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tsinject-proxy"]
