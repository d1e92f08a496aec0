# Python base for the operator image (the root Dockerfile's PYTHON_IMAGE build arg), from the debootstrapped Debian:
# Debian bookworm's python3 + pip. System-wide pip is allowed (the EXTERNALLY-MANAGED marker is removed: the image
# is the environment), and pip trusts the build machine's CA bundle (ca-certificates.crt in the context) so that
# `pip wheel` can reach the package index from inside `docker build`.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY ca-certificates.crt /etc/ssl/certs/chanscale-build-ca.crt
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-pip python-is-python3 passwd ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
    && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED
ENV PIP_CERT=/etc/ssl/certs/chanscale-build-ca.crt
