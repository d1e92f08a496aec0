// Package chanscale instruments a channel worker with the chanscale metrics contract
// (docs/metrics-contract.md), so that a WorkerPool needs no PromQL of its own:
//
//	chanscale_channel_backlog              gauge      messages waiting (len(ch) plus what the source reports)
//	chanscale_channel_enqueued_total       counter    messages that arrived
//	chanscale_channel_processed_total      counter    messages completed successfully
//	chanscale_channel_failed_total         counter    messages that failed
//	chanscale_channel_busy_seconds_total   counter    worker-seconds spent processing (in-flight work included)
//	chanscale_channel_latency_seconds      histogram  enqueue-to-done latency of every finished message
//
// Every series carries the label channel (the WorkerPool's spec.channel). The namespace label belongs to the
// scrape target: Prometheus sets it from the pod's namespace (honor_labels: false). Options.Namespace exports it
// too, for a Prometheus that does not relabel; a scrape that does keeps the worker's copy as exported_namespace.
//
// Pool drains a Go channel with a fixed number of goroutines and records everything; Metrics is the lower-level
// API for workers that manage their own goroutines. docs/sdk.md has a worked example.
package chanscale

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultBuckets are the latency histogram's upper bounds in seconds. Every round SLO people write (100 ms,
// 250 ms, 500 ms, 1 s, 2 s, 5 s, 10 s, 30 s, 60 s) is a bound, so "is the P99 within the objective?" is answered
// exactly at the objective, and the bounds on either side bracket it for histogram_quantile's interpolation.
// They reach from 5 ms to 2 min; set Options.Buckets for objectives outside that range.
var DefaultBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120}

// Metric names of the contract.
const (
	BacklogName   = "chanscale_channel_backlog"
	EnqueuedName  = "chanscale_channel_enqueued_total"
	ProcessedName = "chanscale_channel_processed_total"
	FailedName    = "chanscale_channel_failed_total"
	BusyName      = "chanscale_channel_busy_seconds_total"
	LatencyName   = "chanscale_channel_latency_seconds"
)

// Options configure one channel's metrics.
type Options struct {
	// Channel is the value of the channel label: the WorkerPool's spec.channel. Required.
	Channel string
	// Namespace, when set, is exported as the namespace label. Empty: $POD_NAMESPACE (the downward API), or none.
	// Prometheus should set namespace from the scrape target anyway (docs/metrics-contract.md).
	Namespace string
	// Buckets of the latency histogram; nil means DefaultBuckets.
	Buckets []float64
	// Registerer receives the collectors; nil means prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
}

// Metrics holds one channel's contract series.
type Metrics struct {
	enqueued, processed, failed prometheus.Counter
	latency                     prometheus.Observer
	now                         func() time.Time

	mu        sync.Mutex
	backlogs  []func() float64
	busyDone  float64 // seconds of finished work
	inFlight  int     // jobs started and not done
	startsSum float64 // sum of the in-flight jobs' start times (Unix seconds)
}

// New registers the contract's series for one channel.
func New(o Options) (*Metrics, error) {
	if o.Channel == "" {
		return nil, errors.New("chanscale: Options.Channel is required (the WorkerPool's spec.channel)")
	}
	labels := prometheus.Labels{"channel": o.Channel}
	ns := o.Namespace
	if ns == "" {
		ns = os.Getenv("POD_NAMESPACE")
	}
	if ns != "" {
		labels["namespace"] = ns
	}
	buckets := o.Buckets
	if buckets == nil {
		buckets = DefaultBuckets
	}
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	m := &Metrics{now: time.Now}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels})
	}
	m.enqueued = counter(EnqueuedName, "Messages that arrived on the channel.")
	m.processed = counter(ProcessedName, "Messages completed successfully.")
	m.failed = counter(FailedName, "Messages that failed.")
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: LatencyName, Help: "Enqueue-to-done latency of each finished message, in seconds.",
		ConstLabels: labels, Buckets: buckets,
	})
	m.latency = latency
	backlog := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: BacklogName, Help: "Messages waiting in the channel, not yet taken by a worker.", ConstLabels: labels,
	}, m.Backlog)
	busy := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: BusyName, Help: "Worker-seconds spent processing messages.", ConstLabels: labels,
	}, m.BusySeconds)
	for _, c := range []prometheus.Collector{backlog, m.enqueued, m.processed, m.failed, busy, latency} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("chanscale: registering channel %q: %w", o.Channel, err)
		}
	}
	return m, nil
}

// AddBacklog adds a source of waiting messages to the backlog gauge, read at every scrape: len(ch) of a Go
// channel, or what a broker reports (a JetStream consumer's pending count, a Kafka lag). The contract sums the
// backlog over every pod of the channel, so a broker-wide count must be reported by one process only (the
// producer or a single exporter), never by every worker replica.
func (m *Metrics) AddBacklog(f func() float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.backlogs = append(m.backlogs, f)
}

// Backlog is the current value of the backlog gauge.
func (m *Metrics) Backlog() float64 {
	m.mu.Lock()
	fs := append([]func() float64(nil), m.backlogs...)
	m.mu.Unlock()
	total := 0.0
	for _, f := range fs {
		total += f()
	}
	return total
}

// Enqueued counts n arrivals. Count each message once, where it enters the queue.
func (m *Metrics) Enqueued(n int) { m.enqueued.Add(float64(n)) }

// BusySeconds is the busy counter's value: finished work plus the time in-flight jobs have run so far, so that
// rate() sees a long job's work while it runs, not in one jump at its end.
func (m *Metrics) BusySeconds() float64 {
	now := unix(m.now())
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.busyDone + float64(m.inFlight)*now - m.startsSum
}

// Job is one message being processed; end it with Done.
type Job struct {
	m     *Metrics
	start float64
}

// Start marks a worker busy with one message.
func (m *Metrics) Start() *Job {
	j := &Job{m: m, start: unix(m.now())}
	m.mu.Lock()
	m.inFlight++
	m.startsSum += j.start
	m.mu.Unlock()
	return j
}

// Done ends the job: it counts the message processed (err == nil) or failed, and observes its end-to-end
// latency from enqueuedAt (when the message entered the queue, not when the worker took it).
func (j *Job) Done(enqueuedAt time.Time, err error) {
	end := j.m.now()
	j.m.mu.Lock()
	j.m.inFlight--
	j.m.startsSum -= j.start
	j.m.busyDone += unix(end) - j.start
	j.m.mu.Unlock()
	if err != nil {
		j.m.failed.Inc()
	} else {
		j.m.processed.Inc()
	}
	j.m.latency.Observe(end.Sub(enqueuedAt).Seconds())
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
