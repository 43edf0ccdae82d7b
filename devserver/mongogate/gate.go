// Package mongogate is a MongoDB wire-protocol gate in front of an embedded
// FerretDB v1, giving every client, in any process, the single-document
// atomicity MongoDB has and FerretDB v1 lacks.
//
// FerretDB v1 runs every update as read, change in Go, write the whole
// document back, with nothing held in between. Two clients updating one
// document can both read the old version: a cancel and a start both match
// "status: queued", and a late attempt count writes a finished request back
// to running. It also looks a document up by index only when the filter is
// exactly {_id: v}; {_id: v, status: …} scans the whole collection.
//
// The gate fixes both where every client passes: the store's own process.
// Each write command (update, delete, findAndModify) that names one
// document by _id holds that document's lock until FerretDB has answered,
// so writes of one document take turns whoever sends them; a write that
// does not name one document by _id holds every document's lock. A
// conditional write ({_id: v, and more}) is decided here, under the lock:
// the gate reads the document by _id, tests the rest of the filter, and
// then either answers "matched nothing" itself or forwards the command
// with its filter cut to {_id: v}, which FerretDB answers from its index.
// A condition the gate does not evaluate (an operator other than $eq, $ne,
// $in, $nin and $exists, a dotted path, an array field) is forwarded as it
// came, still under the lock: correct, only slower.
//
// Writes, inserts too, then take turns (see Gate.serial): a few at a time,
// in their order of arrival, instead of SQLite's sleep-and-retry.
//
// Reads pass through untouched: FerretDB reads one document in one SQLite
// statement, which is atomic.
//
// The gate also keeps a change feed (FeedCommand), FerretDB v1 having no
// change streams: which documents the writes it forwarded named, for
// clients that follow many documents without reading each in turn.
package mongogate

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Config configures a Gate.
type Config struct {
	// Listen is the address clients connect to; port 0 picks a free one.
	Listen string
	// Backend is FerretDB's address (host:port), reachable from here only.
	Backend string
	// Logger gets connection errors; nil means slog.Default().
	Logger *slog.Logger
	// Writers is how many write commands the gate lets FerretDB work on
	// at once (see Gate.serial); 0 means DefaultWriters.
	Writers int
}

// DefaultWriters: see Config.Writers.
const DefaultWriters = 2

// Gate is a running gate. Close stops it.
type Gate struct {
	ln      net.Listener
	backend string
	log     *slog.Logger
	reader  *mongo.Client // straight to FerretDB, for the by-_id reads
	locks   locks
	writers chan struct{} // see serial
	feed    feed

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup

	stats Stats
}

// Stats counts how the gate handled write commands, for tests and logs.
type Stats struct {
	// Decided: conditional writes decided here, answered "no match" or
	// forwarded with the filter cut to {_id}.
	Decided atomic.Int64
	// Forwarded: writes by _id forwarded as they came, under their lock.
	Forwarded atomic.Int64
	// Exclusive: writes that held every document's lock.
	Exclusive atomic.Int64
}

// Start listens on cfg.Listen and returns once it accepts connections.
func Start(ctx context.Context, cfg Config) (*Gate, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	reader, err := mongo.Connect(options.Client().ApplyURI("mongodb://" + cfg.Backend + "/").
		SetAppName("turnstile-mongogate").SetServerSelectionTimeout(10 * time.Second))
	if err != nil {
		return nil, fmt.Errorf("mongogate: connect to %s: %w", cfg.Backend, err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		_ = reader.Disconnect(context.Background())
		return nil, fmt.Errorf("mongogate: %w", err)
	}
	if cfg.Writers <= 0 {
		cfg.Writers = DefaultWriters
	}
	g := &Gate{ln: ln, backend: cfg.Backend, log: cfg.Logger, reader: reader, conns: map[net.Conn]struct{}{}, writers: make(chan struct{}, cfg.Writers)}
	g.locks.init()
	g.feed.init()
	g.wg.Add(1)
	go g.accept()
	return g, nil
}

// Addr is the address clients connect to.
func (g *Gate) Addr() string { return g.ln.Addr().String() }

// Stats returns the gate's counters.
func (g *Gate) Stats() *Stats { return &g.stats }

// Close stops accepting, closes every connection and waits for them.
func (g *Gate) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	err := g.ln.Close()
	for c := range g.conns {
		_ = c.Close()
	}
	g.mu.Unlock()
	g.wg.Wait()
	_ = g.reader.Disconnect(context.Background())
	return err
}

func (g *Gate) track(c net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.conns[c] = struct{}{}
	return true
}

func (g *Gate) untrack(c net.Conn) {
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
	_ = c.Close()
}

func (g *Gate) accept() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return // closed
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.serve(c)
		}()
	}
}

// conn is one client connection and its own connection to FerretDB: the
// driver's cursors and sessions live on a connection, so they map 1:1.
type conn struct {
	g       *Gate
	client  net.Conn
	backend net.Conn

	writeMu sync.Mutex // the client side: FerretDB's replies and the gate's own
	out     *bufio.Writer

	mu      sync.Mutex
	pending map[int32]func() // request ID → unlock, released by its reply
	nextID  atomic.Int32
}

func (g *Gate) serve(client net.Conn) {
	if !g.track(client) {
		_ = client.Close()
		return
	}
	defer g.untrack(client)
	var d net.Dialer
	backend, err := d.Dial("tcp", g.backend)
	if err != nil {
		g.log.Warn("mongogate: dial backend", "error", err)
		return
	}
	if !g.track(backend) {
		_ = backend.Close()
		return
	}
	defer g.untrack(backend)
	c := &conn{g: g, client: client, backend: backend, out: bufio.NewWriter(client), pending: map[int32]func(){}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.replies()
		_ = client.Close() // unblocks requests
	}()
	c.requests()
	_ = backend.Close() // unblocks replies
	<-done
	c.releaseAll()
}

// requests forwards the client's messages to FerretDB, holding each
// write's lock until its reply.
func (c *conn) requests() {
	in := bufio.NewReader(c.client)
	out := bufio.NewWriter(c.backend)
	for {
		msg, err := readMessage(in)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.g.log.Debug("mongogate: read request", "error", err)
			}
			return
		}
		forward, unlock, err := c.g.admit(msg, c.reply)
		if err != nil {
			c.g.log.Warn("mongogate: request", "error", err)
			return
		}
		if forward == nil { // answered here
			unlock()
			continue
		}
		expectsReply := !moreToCome(forward)
		if expectsReply {
			c.mu.Lock()
			c.pending[requestID(forward)] = unlock
			c.mu.Unlock()
		}
		_, err = out.Write(forward)
		if err == nil {
			err = out.Flush()
		}
		if !expectsReply {
			unlock()
		}
		if err != nil {
			return
		}
	}
}

// replies forwards FerretDB's replies to the client, releasing the lock of
// the request each answers.
func (c *conn) replies() {
	in := bufio.NewReader(c.backend)
	for {
		msg, err := readMessage(in)
		if err != nil {
			return
		}
		if !moreToCome(msg) {
			c.release(responseTo(msg))
		}
		if err := c.write(msg); err != nil {
			return
		}
	}
}

func (c *conn) write(msg []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if _, err := c.out.Write(msg); err != nil {
		return err
	}
	return c.out.Flush()
}

// reply sends the gate's own answer to request to.
func (c *conn) reply(to int32, body []byte) error {
	return c.write(encodeReply(-1-c.nextID.Add(1), to, body))
}

func (c *conn) release(id int32) {
	c.mu.Lock()
	unlock := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if unlock != nil {
		unlock()
	}
}

func (c *conn) releaseAll() {
	c.mu.Lock()
	pending := c.pending
	c.pending = map[int32]func(){}
	c.mu.Unlock()
	for _, unlock := range pending {
		unlock()
	}
}
