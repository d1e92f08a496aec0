package chanscale

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func newMetrics(t *testing.T, o Options) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	o.Registerer = reg
	m, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

func families(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func TestChannelIsRequired(t *testing.T) {
	if _, err := New(Options{Registerer: prometheus.NewRegistry()}); err == nil ||
		!strings.Contains(err.Error(), "Options.Channel") {
		t.Fatalf("want an error naming Options.Channel, got %v", err)
	}
}

func TestExpositionFollowsTheContract(t *testing.T) {
	_, reg := newMetrics(t, Options{Channel: "orders", Namespace: "shop"})
	mfs := families(t, reg)
	want := map[string]dto.MetricType{
		BacklogName: dto.MetricType_GAUGE, EnqueuedName: dto.MetricType_COUNTER,
		ProcessedName: dto.MetricType_COUNTER, FailedName: dto.MetricType_COUNTER,
		BusyName: dto.MetricType_COUNTER, LatencyName: dto.MetricType_HISTOGRAM,
	}
	if len(mfs) != len(want) {
		t.Fatalf("want exactly the %d contract families, got %d", len(want), len(mfs))
	}
	for name, typ := range want {
		mf, ok := mfs[name]
		if !ok || mf.GetType() != typ {
			t.Fatalf("%s: want a %v, got %v", name, typ, mf)
		}
		labels := map[string]string{}
		for _, l := range mf.GetMetric()[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if len(labels) != 2 || labels["channel"] != "orders" || labels["namespace"] != "shop" {
			t.Fatalf("%s: labels %v, want channel=orders namespace=shop", name, labels)
		}
	}
	var bounds []float64
	for _, b := range mfs[LatencyName].GetMetric()[0].GetHistogram().GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
	}
	if len(bounds) != len(DefaultBuckets) {
		t.Fatalf("buckets %v, want %v", bounds, DefaultBuckets)
	}
	for i := range bounds {
		if bounds[i] != DefaultBuckets[i] {
			t.Fatalf("buckets %v, want %v", bounds, DefaultBuckets)
		}
	}
}

func TestNamespaceFromTheDownwardAPIOrNone(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "")
	_, reg := newMetrics(t, Options{Channel: "a"})
	if l := families(t, reg)[EnqueuedName].GetMetric()[0].GetLabel(); len(l) != 1 {
		t.Fatalf("without a namespace only channel is exported, got %v", l)
	}
	t.Setenv("POD_NAMESPACE", "team-a")
	_, reg = newMetrics(t, Options{Channel: "a"})
	found := false
	for _, l := range families(t, reg)[EnqueuedName].GetMetric()[0].GetLabel() {
		found = found || (l.GetName() == "namespace" && l.GetValue() == "team-a")
	}
	if !found {
		t.Fatal("POD_NAMESPACE should become the namespace label")
	}
}

func TestPoolCountsEveryMessageOnce(t *testing.T) {
	m, reg := newMetrics(t, Options{Channel: "orders"})
	ch := make(chan Item[int], 100)
	var mu sync.Mutex
	seen := map[int]bool{}
	pool := NewPool(m, ch, 4, func(_ context.Context, v int) error {
		mu.Lock()
		seen[v] = true
		mu.Unlock()
		switch {
		case v%5 == 0:
			panic("boom")
		case v%2 == 1:
			return errors.New("odd")
		}
		return nil
	})
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if err := pool.Submit(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.Backlog(); got != 20 {
		t.Fatalf("backlog before draining = %v, want len(ch) = 20", got)
	}
	close(ch)
	pool.Run(ctx) // returns once the closed channel is drained
	mfs := families(t, reg)
	value := func(name string) float64 {
		m := mfs[name].GetMetric()[0]
		if m.GetCounter() != nil {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	// 0..19: multiples of 5 panic (0, 5, 10, 15), other odd numbers fail (1, 3, 7, 9, 11, 13, 17, 19).
	if value(EnqueuedName) != 20 || value(FailedName) != 12 || value(ProcessedName) != 8 || value(BacklogName) != 0 {
		t.Fatalf("enqueued %v failed %v processed %v backlog %v", value(EnqueuedName), value(FailedName),
			value(ProcessedName), value(BacklogName))
	}
	if n := mfs[LatencyName].GetMetric()[0].GetHistogram().GetSampleCount(); n != 20 || len(seen) != 20 {
		t.Fatalf("latency count %d, handled %d: want both 20 (= processed + failed)", n, len(seen))
	}
}

func TestDeliverDoesNotCountArrivalsAndMeasuresFromTheBroker(t *testing.T) {
	m, reg := newMetrics(t, Options{Channel: "orders"})
	ch := make(chan Item[string], 1)
	pool := NewPool(m, ch, 1, func(context.Context, string) error { return nil })
	if err := pool.Deliver(context.Background(), "x", time.Now().Add(-3*time.Second)); err != nil {
		t.Fatal(err)
	}
	close(ch)
	pool.Run(context.Background())
	mfs := families(t, reg)
	if v := mfs[EnqueuedName].GetMetric()[0].GetCounter().GetValue(); v != 0 {
		t.Fatalf("Deliver counted an arrival: %v", v)
	}
	if s := mfs[LatencyName].GetMetric()[0].GetHistogram().GetSampleSum(); s < 3 {
		t.Fatalf("latency %v s: want at least the 3 s spent at the broker", s)
	}
}

func TestSubmitStopsWithTheContext(t *testing.T) {
	m, _ := newMetrics(t, Options{Channel: "orders"})
	pool := NewPool(m, make(chan Item[int]), 1, func(context.Context, int) error { return nil })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := pool.Submit(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled on a full channel, got %v", err)
	}
}

func TestBusySecondsIncludesInFlightWorkAndNeverDecreases(t *testing.T) {
	m, _ := newMetrics(t, Options{Channel: "orders"})
	clock := time.Unix(1000, 0)
	m.now = func() time.Time { return clock }
	a := m.Start()
	clock = clock.Add(2 * time.Second)
	b := m.Start()
	clock = clock.Add(time.Second)
	if got := m.BusySeconds(); got != 4 { // a: 3 s, b: 1 s, both still running
		t.Fatalf("busy = %v, want 4", got)
	}
	a.Done(time.Unix(999, 0), nil)
	if got := m.BusySeconds(); got != 4 {
		t.Fatalf("busy after a finished = %v, want still 4", got)
	}
	clock = clock.Add(time.Second)
	b.Done(time.Unix(999, 0), errors.New("x"))
	if got := m.BusySeconds(); got != 5 {
		t.Fatalf("busy = %v, want 5", got)
	}
}

func TestSourceBacklogAddsToTheChannel(t *testing.T) {
	m, _ := newMetrics(t, Options{Channel: "orders"})
	ch := make(chan Item[int], 10)
	pool := NewPool(m, ch, 1, func(context.Context, int) error { return nil })
	m.AddBacklog(func() float64 { return 40 }) // e.g. a JetStream consumer's pending count
	_ = pool.Submit(context.Background(), 1)
	if got := m.Backlog(); got != 41 {
		t.Fatalf("backlog = %v, want 41", got)
	}
}

func TestTwoChannelsShareARegistry(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	for _, c := range []string{"a", "b"} {
		if _, err := New(Options{Channel: c, Registerer: reg}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := New(Options{Channel: "a", Registerer: reg}); err == nil {
		t.Fatal("registering one channel twice should fail")
	}
	if n := len(families(t, reg)[BacklogName].GetMetric()); n != 2 {
		t.Fatalf("want one backlog series per channel, got %d", n)
	}
}
