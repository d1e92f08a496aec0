"""What held a decision back, as typed values.

A :class:`Limit` is the human sentence shown in ``status.lastDecision.limitedBy`` *and* its :class:`LimitKind`, the
machine-readable reason of the ``ScalingLimited`` condition. It is a ``str`` (so status, tests and the CLI read it
as the sentence) that carries its kind, so no one has to recover the kind by matching substrings.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class LimitKind(str, Enum):
    """The ``ScalingLimited`` condition's reasons."""

    MAX_REPLICAS = "MaxReplicas"
    MIN_REPLICAS = "MinReplicas"
    SCALE_UP_POLICY = "ScaleUpPolicy"
    SCALE_DOWN_POLICY = "ScaleDownPolicy"
    STABILIZATION = "StabilizationWindow"
    TOLERANCE = "Tolerance"
    POLICY = "Policy"
    FALLBACK = "Fallback"
    MISSING_DATA = "MissingData"
    SERVICE_RATE_UNKNOWN = "ServiceRateUnknown"
    SCALING_DISABLED = "ScalingDisabled"
    OTHER = "Limited"


class Limit(str):
    """A limit's sentence, with its :attr:`kind`."""

    kind: LimitKind

    def __new__(cls, text: str, kind: LimitKind = LimitKind.OTHER) -> Limit:
        obj = super().__new__(cls, text)
        obj.kind = kind
        return obj

    def __getnewargs__(self) -> tuple[Any, ...]:  # pickling keeps the kind
        return (str(self), self.kind)


def kind_of(limit: object) -> LimitKind:
    """The kind of a limit; a plain string (e.g. read back from an old status) is ``OTHER``."""
    return limit.kind if isinstance(limit, Limit) else LimitKind.OTHER
