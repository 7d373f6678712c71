# Two images from one build: tsinject (control plane) and tsinject-proxy
# (data plane). A static binary on an empty base, non-root, with only the
# users and the CA bundle beside it; nothing in the image is writable: the
# manifests mount what a container writes. make e2e builds the same images
# without Docker (test/images; a test keeps this file and that in step).
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

FROM scratch AS tsinject
COPY --from=build --chmod=755 /out/tsinject /usr/local/bin/tsinject
COPY --chmod=644 hack/image/passwd /etc/passwd
COPY --chmod=644 hack/image/group /etc/group
COPY --from=build --chmod=644 /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tsinject"]

FROM scratch AS tsinject-proxy
COPY --from=build --chmod=755 /out/tsinject-proxy /usr/local/bin/tsinject-proxy
COPY --chmod=644 hack/image/passwd /etc/passwd
COPY --chmod=644 hack/image/group /etc/group
COPY --from=build --chmod=644 /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tsinject-proxy"]
