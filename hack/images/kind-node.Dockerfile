# kind node image for the pinned Kubernetes version, on the offline kind base image (hack/images.sh). What
# `kind build node-image` would add: kubeadm, kubelet and kubectl in /usr/bin, /kind/version and the default CNI
# and storage manifests (the storage one is kind's own local-path-provisioner manifest, read from the kind module). The component images are preloaded into the node's containerd afterwards (hack/images.sh:
# `ctr images import`, then `docker commit`), because kind's builder fetches images from registries.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY kubeadm kubelet kubectl /usr/bin/
COPY version /kind/version
COPY default-cni.yaml default-storage.yaml /kind/manifests/
# One-node pod network: the ptp + host-local plugins from Debian's containernetworking-plugins, on kind's default
# podSubnet (10.244.0.0/16; the single node gets 10.244.0.0/24). kindnetd (kind's default CNI) is not in the kind
# module and not served by the Go proxy; more than one node needs a route agent (see docs/testing.md).
COPY 10-chanscale-ptp.conflist /etc/cni/net.d/
# Pods' packets to Service IPs never leave the node, even before kube-proxy has written its rules.
COPY chanscale-service-guard.service /etc/systemd/system/
RUN chmod 0755 /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl \
    && systemctl enable chanscale-service-guard.service
