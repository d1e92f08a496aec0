"""Local, loopback-only test infrastructure: real upstream programs started by the integration tests.

Nothing here is used by the operator at run time; it exists so that tests (and developers) can stand up a real
etcd + kube-apiserver + kube-controller-manager, a real Prometheus and a real OPA on 127.0.0.1 in seconds.
"""
