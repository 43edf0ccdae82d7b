package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	neturl "net/url"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Connections are bounded: publishers share pubConns connections with a
// channel each; consumers have a channel per queue spread over at least
// subConns connections, at most chansPerConn channels on one (RabbitMQ's
// default channel_max is 2047).
const (
	pubConns     = 4
	subConns     = 8
	chansPerConn = 1000
	setupWorkers = 16 // queues declared and consumers started at once
)

// epoch is the process's clock origin: message timestamps are durations
// since it, so they use the monotonic clock.
var epoch = time.Now()

// message is a body: the user, the message's index k within the user, and
// its publish time since epoch.
type message struct {
	U int   `json:"u"`
	K int   `json:"k"`
	T int64 `json:"t"`
}

func redact(url string) string {
	if u, err := neturl.Parse(url); err == nil {
		return u.Redacted()
	}
	return "the given URL"
}

// serverVersion connects once and reads the broker's version from the
// connection's server properties.
func serverVersion(url string) (string, error) {
	c, err := amqp.Dial(url)
	if err != nil {
		return "", err
	}
	defer c.Close()
	v, _ := c.Properties["version"].(string)
	if v == "" {
		v = "unknown"
	}
	return v, nil
}

// watch reports the first connection that closes with an error.
type watch struct {
	once sync.Once
	err  chan error
}

func newWatch() *watch { return &watch{err: make(chan error, 1)} }

func (w *watch) add(name string, c *amqp.Connection) {
	ch := c.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		for e := range ch {
			if e != nil {
				w.fail(fmt.Errorf("%s connection closed: %w", name, e))
			}
		}
	}()
}

func (w *watch) fail(err error) {
	w.once.Do(func() { w.err <- err })
}

func dialN(url string, n int, name string, w *watch) ([]*amqp.Connection, error) {
	var conns []*amqp.Connection
	for i := range n {
		c, err := amqp.DialConfig(url, amqp.Config{Properties: amqp.Table{"connection_name": fmt.Sprintf("benchpeer %s %d", name, i)}})
		if err != nil {
			closeAll(conns)
			return nil, err
		}
		w.add(name, c)
		conns = append(conns, c)
	}
	return conns, nil
}

func closeAll(conns []*amqp.Connection) {
	for _, c := range conns {
		_ = c.Close()
	}
}

// runScenario declares the queues and starts their consumers, publishes,
// waits until every confirmed message was consumed (or none was for drain),
// then stops the consumers, deletes the queues and computes the result.
func runScenario(ctx context.Context, url, runID string, sc scenario, drain time.Duration, progress io.Writer) (res result, err error) {
	w := newWatch()
	queue := func(u int) string { return fmt.Sprintf("peer-%s-%s-%d", runID, sc.Name, u) }
	declared := make([]bool, sc.Users)
	defer func() {
		// Delete the queues even when the run failed, on a connection of
		// their own (the others may be the reason it failed).
		if derr := deleteQueues(url, queue, declared); derr != nil && err == nil {
			err = fmt.Errorf("deleting the queues: %w", derr)
		}
	}()

	nSub := max(min(subConns, sc.Users), (sc.Users+chansPerConn-1)/chansPerConn)
	subs, err := dialN(url, nSub, "consumer", w)
	if err != nil {
		return res, err
	}
	subsClosed := false
	defer func() {
		if !subsClosed {
			closeAll(subs)
		}
	}()
	pubs, err := dialN(url, min(pubConns, sc.Concurrency), "publisher", w)
	if err != nil {
		return res, err
	}
	defer closeAll(pubs)

	// Consumers: one channel per queue, prefetch 1, manual ack.
	logs := make([]*userLog, sc.Users)
	var consumed atomic.Int64
	var consumers sync.WaitGroup
	var stopping atomic.Bool // set before the consumers are stopped on purpose
	if err := parallel(ctx, setupWorkers, sc.Users, func(_, u int) error {
		ch, err := subs[u%len(subs)].Channel()
		if err != nil {
			return fmt.Errorf("consumer channel: %w", err)
		}
		if _, err := ch.QueueDeclare(queue(u), true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare %s: %w", queue(u), err)
		}
		declared[u] = true
		if err := ch.Qos(1, 0, false); err != nil {
			return fmt.Errorf("qos: %w", err)
		}
		deliveries, err := ch.Consume(queue(u), "", false, false, false, false, nil)
		if err != nil {
			return fmt.Errorf("consume %s: %w", queue(u), err)
		}
		logs[u] = newUserLog(sc.PerUser)
		consumers.Add(1)
		go func() {
			defer consumers.Done()
			consume(u, deliveries, logs[u], &consumed, w)
			if !stopping.Load() {
				// The broker closed this consumer's channel (or
				// connection): its queue would stall until -drain.
				w.fail(fmt.Errorf("user %d: the consumer stopped early (its channel closed)", u))
			}
		}()
		return nil
	}); err != nil {
		return res, err
	}
	fmt.Fprintf(progress, "   %d queues and consumers ready\n", sc.Users)

	// Publishers: one confirm-mode channel per worker.
	chans := make([]*amqp.Channel, max(1, min(sc.Concurrency, sc.Users)))
	for i := range chans {
		ch, err := pubs[i%len(pubs)].Channel()
		if err != nil {
			return res, fmt.Errorf("publisher channel: %w", err)
		}
		if err := ch.Confirm(false); err != nil {
			return res, fmt.Errorf("confirm mode: %w", err)
		}
		chans[i] = ch
	}
	published := make([]int, sc.Users)
	enqueue := make([][]time.Duration, sc.Users)
	var confirmed atomic.Int64
	total := int64(sc.Users * sc.PerUser)
	stop := ticker(progress, func() string {
		return fmt.Sprintf("   published %d/%d, consumed %d", confirmed.Load(), total, consumed.Load())
	})
	start := time.Now()
	err = parallel(ctx, len(chans), sc.Users, func(wk, u int) error {
		ch := chans[wk]
		for n := 0; n < sc.PerUser; n += sc.Batch {
			end := min(n+sc.Batch, sc.PerUser)
			t0 := time.Now()
			dcs := make([]*amqp.DeferredConfirmation, 0, end-n)
			for k := n; k < end; k++ {
				body, _ := json.Marshal(message{U: u, K: k, T: int64(time.Since(epoch))})
				dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue(u), false, false, amqp.Publishing{
					DeliveryMode: amqp.Persistent, ContentType: "application/json", Body: body,
				})
				if err != nil {
					return fmt.Errorf("publish: %w", err)
				}
				if dc == nil {
					return errors.New("publish: the channel is not in confirm mode")
				}
				dcs = append(dcs, dc)
			}
			for _, dc := range dcs {
				acked, err := dc.WaitContext(ctx)
				if err != nil {
					return fmt.Errorf("waiting for a confirm: %w", err)
				}
				if !acked && ch.IsClosed() {
					// The library resolves outstanding confirms as not
					// acked when the channel or connection goes.
					return fmt.Errorf("user %d: the publisher channel closed before the confirms of %d..%d came", u, n, end-1)
				}
				if !acked {
					return fmt.Errorf("user %d: the broker nacked a message of %d..%d", u, n, end-1)
				}
			}
			enqueue[u] = append(enqueue[u], time.Since(t0))
			published[u] = end
			confirmed.Add(int64(end - n))
		}
		return nil
	})
	submitTime := time.Since(start)
	if err != nil {
		stop()
		return res, err
	}

	// Wait until every confirmed message was consumed.
	want := confirmed.Load()
	last, lastAt := consumed.Load(), time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	for consumed.Load() < want {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case err = <-w.err:
		case <-tick.C:
			if n := consumed.Load(); n != last {
				last, lastAt = n, time.Now()
			} else if time.Since(lastAt) > drain {
				fmt.Fprintf(progress, "   nothing consumed for %s: giving up on %d messages\n", drain, want-n)
				want = n // stop waiting; the rest count as lost
			}
		}
		if err != nil {
			break
		}
	}
	tick.Stop()
	stop()
	if err != nil {
		return res, err
	}
	select {
	case err := <-w.err:
		// A connection or ack that failed is a failed run, even when all
		// messages were in.
		return res, err
	default:
	}
	// Stop the consumers (closing their connections ends their delivery
	// channels) and wait for them, so their logs are theirs no more. An ack
	// that fails from here on (a message still in flight after -drain gave
	// up) is no longer watched: that message counts as lost.
	stopping.Store(true)
	closeAll(subs)
	subsClosed = true
	consumers.Wait()

	t := summarise(logs, published)
	var enq []time.Duration
	for _, e := range enqueue {
		enq = append(enq, e...)
	}
	res = result{
		Name: sc.Name, Users: sc.Users, PerUser: sc.PerUser, Batch: sc.Batch,
		Published: t.Published, Consumed: t.Consumed,
		Lost: t.Lost, Duplicated: t.Duplicated, OutOfOrder: t.OutOfOrder, Problems: t.Problems,
		enq: [2]time.Duration{pct(enq, 50), pct(enq, 99)},
		e2e: [2]time.Duration{pct(t.E2E, 50), pct(t.E2E, 99)},
	}
	res.EnqueueP50, res.EnqueueP99 = msf(res.enq[0]), msf(res.enq[1])
	res.E2EP50, res.E2EP99 = msf(res.e2e[0]), msf(res.e2e[1])
	if span := t.LastAck - start.Sub(epoch); span > 0 {
		res.Completed = float64(t.Consumed) / span.Seconds()
	}
	if submitTime > 0 {
		res.Submitted = float64(t.Published) / submitTime.Seconds()
	}
	return res, nil
}

// consume executes one user's messages one at a time: decode, ack, record.
func consume(u int, deliveries <-chan amqp.Delivery, log *userLog, consumed *atomic.Int64, w *watch) {
	for d := range deliveries {
		var m message
		err := json.Unmarshal(d.Body, &m)
		if aerr := d.Ack(false); aerr != nil {
			w.fail(fmt.Errorf("user %d: ack: %w", u, aerr))
			return
		}
		now := time.Since(epoch)
		switch {
		case err != nil:
			log.ooo++
			log.problem("undecodable body %q: %v", d.Body, err)
			continue
		case m.U != u:
			log.ooo++
			log.problem("message %d of user %d arrived in this user's queue", m.K, m.U)
			continue
		}
		if log.observe(m.K) {
			log.e2e = append(log.e2e, now-time.Duration(m.T))
			log.lastAck = now
			consumed.Add(1)
		}
	}
}

// deleteQueues deletes the declared queues over a fresh connection; if that
// connection fails, it carries on over another, three times at most.
func deleteQueues(url string, name func(int) string, declared []bool) error {
	var todo []int
	for u, d := range declared {
		if d {
			todo = append(todo, u)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	for attempt := 0; attempt < 3 && len(todo) > 0 && ctx.Err() == nil; attempt++ {
		var done []bool
		done, err = deleteOnce(ctx, url, name, todo)
		var left []int
		for i, u := range todo {
			if !done[i] {
				left = append(left, u)
			}
		}
		todo = left
	}
	if len(todo) > 0 {
		return fmt.Errorf("%d queues left (%s …): %w", len(todo), name(todo[0]), err)
	}
	return nil
}

func deleteOnce(ctx context.Context, url string, name func(int) string, todo []int) ([]bool, error) {
	done := make([]bool, len(todo))
	c, err := amqp.DialConfig(url, amqp.Config{Properties: amqp.Table{"connection_name": "benchpeer cleanup"}})
	if err != nil {
		return done, err
	}
	defer c.Close()
	const workers = 4
	chans := make([]*amqp.Channel, workers)
	for i := range chans {
		if chans[i], err = c.Channel(); err != nil {
			return done, err
		}
	}
	err = parallel(ctx, workers, len(todo), func(wk, i int) error {
		if _, err := chans[wk].QueueDelete(name(todo[i]), false, false, false); err != nil {
			return err
		}
		done[i] = true
		return nil
	})
	return done, err
}
