# kind base image, built offline from a debootstrapped Debian (hack/images.sh). It follows kind's own
# images/base/Dockerfile at the pinned kind version, whose files/ tree (entrypoint, containerd config, systemd
# units, clean-install) the build context carries from the kind module; the differences, and why:
#   - containerd, runc and the CNI plugins are Debian bookworm's packages (kind clones and builds them from GitHub,
#     which is not reachable here); crictl is built from its Go module (sigs.k8s.io/cri-tools) by hack/tools.sh;
#   - containerd's CRI config sets restrict_oom_score_adj = true and its unit drops OOMScoreAdjust=-999: both ask
#     for a negative oom_score_adj, which needs CAP_SYS_RESOURCE (missing from some machines' bounding sets); on a
#     normal host the only effect is that containerd keeps the default OOM score;
#   - no fuse-overlayfs (rootless only), nfs-common or open-iscsi.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
# kind's files go in after the packages, so that dpkg does not stop at its containerd config.toml (a conffile).
COPY files/ /kind-files/
RUN DEBIAN_FRONTEND=noninteractive sh /kind-files/usr/local/bin/clean-install \
      systemd \
      conntrack iptables nftables iproute2 ethtool util-linux mount kmod \
      libseccomp2 pigz \
      bash ca-certificates curl jq procps \
      containerd runc containernetworking-plugins \
    && find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete \
    && rm -f /lib/systemd/system/multi-user.target.wants/* \
    && rm -f /etc/systemd/system/*.wants/* \
    && rm -f /lib/systemd/system/local-fs.target.wants/* \
    && rm -f /lib/systemd/system/sockets.target.wants/*udev* \
    && rm -f /lib/systemd/system/sockets.target.wants/*initctl* \
    && rm -f /lib/systemd/system/basic.target.wants/* \
    && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \
    && ln -sf "$(which systemd)" /sbin/init \
    && cp -a /kind-files/. / && rm -rf /kind-files \
    && chmod 0755 /usr/local/bin/* /kind/bin /kind/bin/*
COPY crictl /usr/local/bin/crictl
RUN systemctl enable kubelet.service \
    && systemctl enable containerd.service \
    && systemctl enable undo-mount-hacks.service \
    && systemctl mask systemd-binfmt.service \
    && mkdir -p /etc/kubernetes/manifests
# kind's units and scripts expect containerd in /usr/local/bin and the CNI plugins in /opt/cni/bin.
RUN for b in containerd ctr containerd-shim-runc-v2; do ln -sf "/usr/bin/$b" "/usr/local/bin/$b"; done \
    && mkdir -p /opt/cni/bin && ln -sf /usr/lib/cni/* /opt/cni/bin/ \
    && ctr oci spec \
        | jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
        | jq 'del(.process.rlimits)' \
        > /etc/containerd/cri-base.json \
    && sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' /etc/containerd/config.toml \
    && grep -q 'restrict_oom_score_adj = true' /etc/containerd/config.toml \
    && mkdir -p /etc/systemd/system/containerd.service.d \
    && printf '[Service]\nOOMScoreAdjust=0\n' > /etc/systemd/system/containerd.service.d/10-chanscale.conf \
    && containerd --version && runc --version && crictl --version
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]
