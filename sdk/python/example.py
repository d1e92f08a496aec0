"""The smallest complete Python worker on the SDK (the twin of sdk/go/examples/channel).

A producer submits messages at --rate per second, --workers threads drain the queue (each message takes --service
seconds on average, a fraction --fail fails), and /metrics serves the contract::

    python sdk/python/example.py --listen 127.0.0.1:9401 --channel orders --rate 50 --workers 4
"""

from __future__ import annotations

import argparse
import random
import time

from chanscale_sdk import ChannelMetrics, Pool
from prometheus_client import start_http_server


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", default="127.0.0.1:9401")
    p.add_argument("--channel", default="orders")
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--service", type=float, default=0.05)
    p.add_argument("--fail", type=float, default=0.0)
    args = p.parse_args()

    def handle(_: int) -> None:
        time.sleep(random.expovariate(1 / args.service))
        if random.random() < args.fail:
            raise RuntimeError("failed")

    pool: Pool[int] = Pool(ChannelMetrics(args.channel), handle, workers=args.workers)
    host, port = args.listen.rsplit(":", 1)
    start_http_server(int(port), addr=host)
    pool.start()
    i, next_at = 0, time.monotonic()
    while True:  # a steady producer
        pool.submit(i)
        i += 1
        next_at += 1 / args.rate
        time.sleep(max(0.0, next_at - time.monotonic()))


if __name__ == "__main__":
    main()
