// Command channel is the smallest complete worker on the SDK: a producer submits messages into a Go channel at
// --rate per second, --workers goroutines drain it (each message takes --service seconds on average, a fraction
// --fail of them fails), and /metrics serves the chanscale metrics contract. The integration test
// tests/integration/test_sdk_contract.py scrapes it with a real Prometheus and reads it with the operator's own
// queries.
//
//	go run ./examples/channel --listen 127.0.0.1:9400 --channel orders --rate 50 --workers 4
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"math/rand/v2"
	"time"

	chanscale "github.com/chanscale/chanscale/sdk/go"
	"github.com/chanscale/chanscale/sdk/go/run"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9400", "address of /metrics")
	channel := flag.String("channel", "orders", "the channel label (the WorkerPool's spec.channel)")
	rate := flag.Float64("rate", 20, "messages per second the producer submits")
	workers := flag.Int("workers", 4, "goroutines draining the channel")
	service := flag.Float64("service", 0.05, "mean seconds a message takes (exponentially distributed)")
	fail := flag.Float64("fail", 0, "fraction of messages that fail")
	run.Main(channel, func(ctx context.Context, m *chanscale.Metrics) error {
		ch := make(chan chanscale.Item[int], 10000)
		pool := chanscale.NewPool(m, ch, *workers, func(ctx context.Context, _ int) error {
			time.Sleep(time.Duration(rand.ExpFloat64() * *service * float64(time.Second)))
			if rand.Float64() < *fail {
				return errors.New("failed")
			}
			return nil
		})
		go pool.Run(ctx)
		go produce(ctx, pool, *rate)
		log.Printf("channel %q: %g msg/s, %d workers; metrics on http://%s/metrics", *channel, *rate, *workers, *listen)
		return run.Serve(ctx, *listen, nil)
	})
}

// produce submits messages at a steady rate (arrivals counted by Submit).
func produce(ctx context.Context, pool *chanscale.Pool[int], rate float64) {
	if rate <= 0 {
		return
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if pool.Submit(ctx, i) != nil {
				return
			}
		}
	}
}
