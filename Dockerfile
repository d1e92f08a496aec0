# syntax=docker/dockerfile:1
# chanscale operator image: `chanscale run` (the operator) and `chanscale sim` (the channel simulator used by the
# e2e tests and demos). Multi-stage: build a wheel with the full toolchain, install it, then copy only the
# interpreter, the installed packages and the shared libraries they load into an image FROM scratch: no shell, no
# package manager, no pip (hack/image_rootfs.py). The test harness, the demo and their dependencies (cryptography,
# matplotlib) are extras (`chanscale[demo]`, `chanscale[dev]`) that the image does not install (docs/install.md).
#
#   docker build -t chanscale:dev .
#
# The bases are pinned by tag here; pin them by digest too in your registry mirror (docker buildx imagetools
# inspect python:3.11.11-slim-bookworm) if your supply-chain policy requires it. OPA_IMAGE supplies the `opa` binary
# that the default `--opa local` mode runs; keep its tag at hack/versions.env's OPA_VERSION (hack/images.sh builds
# both bases from source and passes them in: docs/testing.md).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG OPA_IMAGE=openpolicyagent/opa:1.22.2-static

FROM ${OPA_IMAGE} AS opa

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the build needs, so source edits elsewhere do not bust the cache.
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS rootfs
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
COPY hack/image_rootfs.py /image_rootfs.py
# Install from the wheels only (no index at this stage), byte-compile once at build time (the root filesystem is
# read-only at run time), then collect what runs into /rootfs.
RUN pip install --no-index --find-links /wheels chanscale \
    && python -m compileall -q "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && python /image_rootfs.py /rootfs \
    && chroot /rootfs python -c 'import chanscale.cli, chanscale.handlers, chanscale.policy, chanscale.sim.exporter'

FROM scratch
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/usr/local/bin:/usr/bin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
COPY --from=rootfs /rootfs/ /
# The static OPA binary for `--opa local` (the operator supervises `opa run --server` on loopback).
COPY --from=opa /opa /usr/local/bin/opa
USER 65532:65532
WORKDIR /tmp
# 8080: the operator's /metrics; 8081: kopf's /healthz.
EXPOSE 8080 8081
ENTRYPOINT ["chanscale"]
CMD ["run", "--all-namespaces", "--standalone"]
