"""Real upstream programs on loopback: etcd + kube-apiserver + kube-controller-manager, Prometheus and OPA.

The integration tests, ``chanscale demo`` and the benchmarks stand up a real control plane, Prometheus and OPA on
127.0.0.1 in seconds with these. The operator itself uses only :mod:`chanscale.local.opa`, to supervise a local
``opa run --server`` when started with ``--opa local``.
"""
