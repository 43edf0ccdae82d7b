# syntax=docker/dockerfile:1
#
# The tsctl image: the admin CLI, nothing else. Build from the repository root:
#
#   docker build -f docker/tsctl.Dockerfile -t turnstile-tsctl .
#   docker run --rm -e TSCTL_API=http://api:8080 turnstile-tsctl sessions list

ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/tsctl ./cmd/tsctl

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/tsctl /usr/local/bin/tsctl
# tsctl keeps its token in $HOME/.config/turnstile/tsctl.json (mode 0600).
ENV HOME=/home/nonroot
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tsctl"]
CMD ["--help"]
