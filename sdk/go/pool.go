package chanscale

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Item is a message in a Pool's channel, stamped with the time it entered the queue.
type Item[T any] struct {
	Value      T
	EnqueuedAt time.Time
}

// Handler processes one message; an error (or a panic) counts it failed.
type Handler[T any] func(ctx context.Context, v T) error

// Pool is a fixed number of goroutines draining one Go channel, instrumented with the metrics contract: the
// channel's length is the backlog, Submit counts arrivals, and every handled message counts processed or failed,
// adds its busy time and observes its end-to-end latency.
type Pool[T any] struct {
	m       *Metrics
	ch      chan Item[T]
	workers int
	handle  Handler[T]
}

// NewPool instruments ch (its len() joins the backlog gauge) for workers goroutines running handle.
func NewPool[T any](m *Metrics, ch chan Item[T], workers int, handle Handler[T]) *Pool[T] {
	if workers < 1 {
		workers = 1
	}
	m.AddBacklog(func() float64 { return float64(len(ch)) })
	return &Pool[T]{m: m, ch: ch, workers: workers, handle: handle}
}

// Submit queues a message that arrives now, in this process: it counts one arrival. It blocks while the
// channel is full, until ctx ends.
func (p *Pool[T]) Submit(ctx context.Context, v T) error {
	p.m.Enqueued(1)
	return p.Deliver(ctx, v, p.m.now())
}

// Deliver queues a message that arrived earlier at an upstream broker, which counted it there (the producer
// exports enqueued_total): latency is measured from enqueuedAt, e.g. the broker's timestamp of the message.
func (p *Pool[T]) Deliver(ctx context.Context, v T, enqueuedAt time.Time) error {
	select {
	case p.ch <- Item[T]{Value: v, EnqueuedAt: enqueuedAt}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run drains the channel with the pool's goroutines until ctx ends or the channel is closed and empty.
func (p *Pool[T]) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := 0; i < p.workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case it, ok := <-p.ch:
					if !ok {
						return
					}
					p.process(ctx, it)
				}
			}
		}()
	}
	wg.Wait()
}

func (p *Pool[T]) process(ctx context.Context, it Item[T]) {
	job := p.m.Start()
	var err error
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("chanscale: handler panicked: %v", r)
		}
		job.Done(it.EnqueuedAt, err)
	}()
	err = p.handle(ctx, it.Value)
}
