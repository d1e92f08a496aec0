// Command loadgen publishes to the example's JetStream stream at a rate that can be changed while it runs
// (POST /control {"rate": 40}), and exports the channel's arrivals and the broker's backlog (the durable
// consumer's pending count) with the chanscale Go SDK: the producer is the one process that sees every arrival,
// so these series are exported once per channel, however many workers run.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/chanscale/chanscale/examples/nats-worker/stream"
	chanscale "github.com/chanscale/chanscale/sdk/go"
	"github.com/chanscale/chanscale/sdk/go/run"
	"github.com/nats-io/nats.go/jetstream"
)

type rate struct {
	mu   sync.Mutex
	perS float64
}

func (r *rate) get() float64  { r.mu.Lock(); defer r.mu.Unlock(); return r.perS }
func (r *rate) set(v float64) { r.mu.Lock(); r.perS = v; r.mu.Unlock() }

func main() {
	cfg := stream.Flags()
	listen := flag.String("listen", ":9400", "address of /metrics, /healthz and /control")
	initial := flag.Float64("rate", 5, "messages per second to publish")
	run.Main(&cfg.Channel, func(ctx context.Context, m *chanscale.Metrics) error {
		r := &rate{perS: *initial}
		nc, cons, err := stream.Connect(ctx, cfg)
		if err != nil {
			return err
		}
		defer nc.Close()
		// The broker's backlog, read at every scrape. Unknown is NaN, never 0: the operator then holds instead of
		// scaling down on a broker it cannot see.
		m.AddBacklog(func() float64 {
			ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			info, err := cons.Info(ictx)
			if err != nil {
				return math.NaN()
			}
			return float64(info.NumPending)
		})
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		go stream.Serve(ctx, *listen, controlMux(r))
		log.Printf("loadgen: %g msg/s to %s (stream %s)", r.get(), cfg.Subject, cfg.Stream)
		publish(ctx, js, cfg.Subject, m, r)
		return nil
	})
}

// publish sends rate() messages per second in 10 ms steps, carrying the fraction over, so that any rate is met
// on average; each stored message counts one arrival.
func publish(ctx context.Context, js jetstream.JetStream, subject string, m *chanscale.Metrics, r *rate) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	last, owed := time.Now(), 0.0
	for seq := 0; ; {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			owed += r.get() * now.Sub(last).Seconds()
			last = now
			for ; owed >= 1; owed-- {
				if _, err := js.Publish(ctx, subject, []byte(fmt.Sprint(seq))); err != nil {
					log.Printf("publish: %v", err)
					owed = 0
					break
				}
				seq++
				m.Enqueued(1)
			}
		}
	}
}

// controlMux answers GET /control with the rate and sets it on POST /control {"rate": 40}.
func controlMux(r *rate) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/control", func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodPost {
			var body struct {
				Rate *float64 `json:"rate"`
			}
			if err := json.NewDecoder(req.Body).Decode(&body); err != nil || body.Rate == nil || *body.Rate < 0 {
				http.Error(w, `want {"rate": <messages per second, >= 0>}`, http.StatusBadRequest)
				return
			}
			r.set(*body.Rate)
			log.Printf("rate set to %g msg/s", *body.Rate)
		}
		_ = json.NewEncoder(w).Encode(map[string]float64{"rate": r.get()})
	})
	return mux
}
