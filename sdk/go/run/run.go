// Package run is the set-up every chanscale worker command repeats: parse the flags, cancel a context on SIGINT
// or SIGTERM (Kubernetes stops a pod with SIGTERM, so a scale-down drains what the pod holds instead of losing
// it), register the channel's metrics, and serve /metrics and /healthz until the context ends.
//
//	func main() {
//		channel := flag.String("channel", "orders", "the WorkerPool's spec.channel")
//		run.Main(channel, func(ctx context.Context, m *chanscale.Metrics) error {
//			// start the pool and the source; return once ctx is done and the work is drained
//			return run.Serve(ctx, ":9400", nil)
//		})
//	}
package run

import (
	"context"
	"errors"
	"flag"
	"log"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	chanscale "github.com/chanscale/chanscale/sdk/go"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Main parses the command line, registers the metrics of the channel that *channel names (read after parsing),
// and calls body with a context that SIGINT or SIGTERM cancels. An error from either ends the program
// (log.Fatal); body returning nil ends it normally.
func Main(channel *string, body func(ctx context.Context, m *chanscale.Metrics) error) {
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	m, err := chanscale.New(chanscale.Options{Channel: *channel})
	if err == nil {
		err = body(ctx, m)
	}
	if err != nil {
		stop()
		log.Fatal(err)
	}
}

// Serve serves /metrics (the default Prometheus registry), /healthz and whatever mux already has on listen until
// ctx ends; it returns nil then, or the listener's error. A nil mux serves just /metrics and /healthz.
func Serve(ctx context.Context, listen string, mux *http.ServeMux) error {
	if mux == nil {
		mux = http.NewServeMux()
	}
	mux.Handle("/metrics", promhttp.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
