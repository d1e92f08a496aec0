// Package stream holds what the example worker and its load generator share: the flags naming the NATS
// JetStream stream and consumer, and creating both (idempotently) so either process may start first.
package stream

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/chanscale/chanscale/sdk/go/run"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config names the broker, the stream, its subject and the durable consumer the workers share.
type Config struct {
	URL, Stream, Subject, Consumer, Channel string
}

// Flags registers the shared flags.
func Flags() *Config {
	c := &Config{}
	flag.StringVar(&c.URL, "nats-url", "nats://127.0.0.1:4222", "NATS server URL")
	flag.StringVar(&c.Stream, "stream", "ORDERS", "JetStream stream (created as a work queue if missing)")
	flag.StringVar(&c.Subject, "subject", "orders", "subject the stream captures")
	flag.StringVar(&c.Consumer, "consumer", "workers", "durable pull consumer every worker replica shares")
	flag.StringVar(&c.Channel, "channel", "orders", "the channel label (the WorkerPool's spec.channel)")
	return c
}

// Connect connects (retrying until ctx ends: the broker may start after us) and ensures the stream and the
// consumer exist.
func Connect(ctx context.Context, c *Config) (*nats.Conn, jetstream.Consumer, error) {
	nc, err := nats.Connect(c.URL, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to %s: %w", c.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, err
	}
	for {
		cons, err := ensure(ctx, js, c)
		if err == nil {
			return nc, cons, nil
		}
		select {
		case <-ctx.Done():
			nc.Close()
			return nil, nil, fmt.Errorf("creating stream %s and consumer %s: %w", c.Stream, c.Consumer, err)
		case <-time.After(time.Second):
		}
	}
}

func ensure(ctx context.Context, js jetstream.JetStream, c *Config) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: c.Stream, Subjects: []string{c.Subject},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.MemoryStorage,
	})
	if err != nil {
		return nil, err
	}
	return js.CreateOrUpdateConsumer(ctx, c.Stream, jetstream.ConsumerConfig{
		Durable: c.Consumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 10 * time.Second, // a killed worker's messages return soon
		FilterSubject: c.Subject,
	})
}

// Serve serves /metrics, /healthz and whatever mux already has (nil: nothing more) on listen until ctx ends; a
// listener that fails ends the program.
func Serve(ctx context.Context, listen string, mux *http.ServeMux) {
	if err := run.Serve(ctx, listen, mux); err != nil {
		log.Fatal(err)
	}
}
