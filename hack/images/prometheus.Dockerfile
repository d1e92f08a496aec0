# Prometheus from Debian bookworm's `prometheus` package (the same build the integration tests run on the host),
# laid out like upstream's image: /bin/prometheus, config in /etc/prometheus, data in /prometheus, user nobody.
# Only the binary (linked against libc alone) and the default config are kept: the package's web-UI JavaScript
# dependencies would more than double the image.
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS package
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus

FROM ${BASE_IMAGE}
COPY --from=package /usr/bin/prometheus /usr/bin/promtool /usr/bin/
COPY --from=package /etc/prometheus/prometheus.yml /etc/prometheus/prometheus.yml
RUN mkdir -p /prometheus && chown 65534:65534 /prometheus && /bin/prometheus --version
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
