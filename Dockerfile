# bindguard's image: `make image` (docker build --build-arg VERSION=... --build-arg COMMIT=...).
#
# The build needs no clang: the BPF objects and their Go bindings are
# committed (loader/*_bpfel.o, loader/*_bpfel.go).

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/bindguard ./cmd/bindguard

# Static binary on distroless static: no shell, no package manager, no libc.
# Not the :nonroot variant: bindguard must run as uid 0. Kubernetes grants
# the capabilities it adds (BPF, PERFMON, NET_ADMIN, ...) to a root process
# only; a non-root process gets them in its bounding set but not in effect,
# so bpf(2) would fail with EPERM. The DaemonSet drops every other capability
# and keeps privileged: false, which is where the confinement comes from.
FROM gcr.io/distroless/static-debian12
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="bindguard" \
      org.opencontainers.image.description="Enforces a host port registry with cgroup bind4/bind6 BPF programs" \
      org.opencontainers.image.source="https://github.com/bindguard/bindguard" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=build /out/bindguard /usr/local/bin/bindguard
USER 0:0
ENTRYPOINT ["/usr/local/bin/bindguard"]
CMD ["version"]
