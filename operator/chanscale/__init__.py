"""chanscale: SLO-driven autoscaling of channel workers on Kubernetes."""

__version__ = "0.1.0"

GROUP = "chanscale.dev"
VERSION = "v1alpha1"
PLURAL = "workerpools"
FIELD_MANAGER = "chanscale"
PAUSED_ANNOTATION = "chanscale.dev/paused"
PAUSED_REPLICAS_ANNOTATION = "chanscale.dev/paused-replicas"  # KEDA: autoscaling.keda.sh/paused-replicas
