// Command worker is a channel worker on the chanscale Go SDK consuming a NATS JetStream work queue: it pulls
// messages from a durable consumer into a Go channel that --workers goroutines drain. Each message takes --service
// seconds on average (exponentially distributed; a stand-in for real work) and a fraction --fail fails (Term: not
// redelivered). /metrics serves the contract: len(ch) as backlog, processed/failed/busy, and the end-to-end
// latency from the moment JetStream stored the message. Arrivals and the broker's pending count are exported by
// the producer (cmd/loadgen), once per channel: docs/sdk.md says why.
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"math/rand/v2"
	"time"

	"github.com/chanscale/chanscale/examples/nats-worker/stream"
	chanscale "github.com/chanscale/chanscale/sdk/go"
	"github.com/chanscale/chanscale/sdk/go/run"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	cfg := stream.Flags()
	listen := flag.String("listen", ":9400", "address of /metrics and /healthz")
	workers := flag.Int("workers", 1, "goroutines draining the channel in this process")
	service := flag.Float64("service", 0.1, "mean seconds one message takes")
	fail := flag.Float64("fail", 0, "fraction of messages that fail")
	run.Main(&cfg.Channel, func(ctx context.Context, m *chanscale.Metrics) error {
		go stream.Serve(ctx, *listen, nil)
		nc, cons, err := stream.Connect(ctx, cfg)
		if err != nil {
			return err
		}
		defer nc.Drain() //nolint:errcheck
		// A buffer of one message per goroutine: what is pulled but not started is backlog (len(ch)); the broker
		// keeps the rest pending, where the producer's count sees it.
		ch := make(chan chanscale.Item[jetstream.Msg], *workers)
		pool := chanscale.NewPool(m, ch, *workers, func(ctx context.Context, msg jetstream.Msg) error {
			time.Sleep(time.Duration(rand.ExpFloat64() * *service * float64(time.Second)))
			if rand.Float64() < *fail {
				_ = msg.Term()
				return errors.New("failed")
			}
			return msg.Ack()
		})
		done := make(chan struct{})
		go func() { pool.Run(context.Background()); close(done) }()
		it, err := cons.Messages(jetstream.PullMaxMessages(1))
		if err != nil {
			return err
		}
		go func() { <-ctx.Done(); it.Stop() }()
		log.Printf("worker: channel %q, stream %s, consumer %s, %d goroutines", cfg.Channel, cfg.Stream, cfg.Consumer, *workers)
		consume(ctx, it, pool)
		// Terminated (a scale-down): pull no more, finish and ack what this pod holds, then exit.
		close(ch)
		<-done
		log.Printf("worker: stopped after finishing the messages it held")
		return nil
	})
}

// consume delivers every message the iterator yields to the pool until ctx ends or the iterator is stopped.
func consume(ctx context.Context, it jetstream.MessagesContext, pool *chanscale.Pool[jetstream.Msg]) {
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			log.Printf("next message: %v", err)
			continue
		}
		enqueued := time.Now()
		if meta, err := msg.Metadata(); err == nil {
			enqueued = meta.Timestamp // when JetStream stored it: the latency is end to end
		}
		_ = pool.Deliver(context.Background(), msg, enqueued)
	}
}
