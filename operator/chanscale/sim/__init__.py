"""Channel simulation: the event-driven queue model shared by ``chanscale sim`` and the benchmarks."""

from chanscale.sim.model import DEFAULT_BUCKETS, ChannelModel

__all__ = ["DEFAULT_BUCKETS", "ChannelModel"]
