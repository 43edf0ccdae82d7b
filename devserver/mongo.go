package devserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"

	"github.com/turnstile/turnstile/devserver/mongogate"
	_ "modernc.org/sqlite" // database/sql driver "sqlite", the one FerretDB uses
)

// MongoConfig configures an embedded MongoDB-compatible server (FerretDB v1
// on SQLite).
type MongoConfig struct {
	// DataDir holds one SQLite file per database (<database>.sqlite). It is
	// created if missing. "" uses a fresh temporary directory that Stop
	// removes, with fsync switched off: a throwaway store for tests.
	DataDir string
	// Host is the bind host; default "127.0.0.1".
	Host string
	// Port is the TCP port; 0 picks a free port.
	Port int
	// Logger receives FerretDB logs; nil means slog.Default().
	Logger *slog.Logger
	// LogLevel is the minimum level passed to Logger; nil means slog.LevelWarn.
	LogLevel slog.Leveler
	// Synchronous is SQLite's synchronous setting of a DataDir store: "full"
	// (default: every commit is fsynced before FerretDB answers, so a 202
	// survives a power loss) or "normal" (WAL without an fsync per commit).
	Synchronous string
}

// Mongo is a running embedded FerretDB (sqlite handler, telemetry off)
// behind a mongogate.Gate, which is what clients connect to.
type Mongo struct {
	dir    string
	temp   bool
	uri    string
	gate   *mongogate.Gate
	cancel context.CancelFunc
	done   chan struct{}

	stopOnce sync.Once
	stopErr  error
}

// ferretNewMu serialises ferretdb.New, which writes package-level version
// info and would race when two servers start at once.
var ferretNewMu sync.Mutex

// ferretSQLiteURL is FerretDB's SQLite URL for the files in dir, with
// pragma applied to each connection.
func ferretSQLiteURL(dir, pragma string) string {
	return "file:" + (&url.URL{Path: dir + "/"}).EscapedPath() + "?" + url.Values{"_pragma": {pragma}}.Encode()
}

// StartMongo starts FerretDB and returns once it accepts connections.
// ctx bounds the start only; the server runs until Stop.
func StartMongo(ctx context.Context, cfg MongoConfig) (*Mongo, error) {
	if cfg.Host == "" {
		cfg.Host = defaultHost
	}
	if cfg.Port != 0 {
		// ferretdb.New leaks its SQLite backend when it cannot listen, and
		// FerretDB's leak tracker then panics the whole process from a
		// finalizer at the next GC. Fail before calling it.
		if err := checkPortFree(cfg.Host, cfg.Port); err != nil {
			return nil, fmt.Errorf("mongo: %w", err)
		}
	}
	m := &Mongo{done: make(chan struct{})}
	// FerretDB's WAL default with synchronous FULL (see
	// MongoConfig.Synchronous); off for the throwaway directory.
	sync, err := synchronousMode(cfg.Synchronous)
	if err != nil {
		return nil, fmt.Errorf("mongo: %w", err)
	}
	pragma := "synchronous(" + sync + ")"
	if cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "turnstile-mongo-*")
		if err != nil {
			return nil, fmt.Errorf("mongo temp dir: %w", err)
		}
		m.dir, m.temp, pragma = dir, true, "synchronous(off)"
	} else {
		dir, err := filepath.Abs(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("mongo data dir: %w", err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("mongo data dir: %w", err)
		}
		m.dir = dir
	}
	fail := func(err error) (*Mongo, error) {
		if m.temp {
			_ = os.RemoveAll(m.dir)
		}
		return nil, err
	}

	sqliteURL := ferretSQLiteURL(m.dir, pragma)
	// FerretDB listens on a loopback port of its own; clients reach it
	// only through the gate, which makes each document's writes atomic
	// for all of them (see package mongogate).
	ferretNewMu.Lock()
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Logger:    slog.New(&demoteResponses{next: quietLogger(cfg.Logger, cfg.LogLevel).Handler()}),
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	ferretNewMu.Unlock()
	if err != nil {
		return fail(fmt.Errorf("mongo: ferretdb: %w", err))
	}
	runCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		defer close(m.done)
		_ = f.Run(runCtx) // always nil; returns after connections and backend close
	}()
	// MongoDBURI waits for Run to bind; it has the port.
	bound, err := url.Parse(f.MongoDBURI())
	if err != nil {
		_ = m.Stop()
		return nil, fmt.Errorf("mongo: parse uri: %w", err)
	}
	m.gate, err = mongogate.Start(ctx, mongogate.Config{
		Listen:  net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)),
		Backend: bound.Host,
		Logger:  quietLogger(cfg.Logger, cfg.LogLevel),
	})
	if err != nil {
		_ = m.Stop()
		return nil, fmt.Errorf("mongo: %w", err)
	}
	_, port, _ := net.SplitHostPort(m.gate.Addr())
	addr := net.JoinHostPort(dialHost(cfg.Host), port)
	m.uri = "mongodb://" + addr + "/"

	err = poll(ctx, 10*time.Second, 20*time.Millisecond, func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		_ = m.Stop()
		return nil, fmt.Errorf("mongo %s not ready: %w", addr, err)
	}
	return m, nil
}

// URI returns the connection string, e.g. mongodb://127.0.0.1:27017/, for
// mongo-driver v2 and mongosh.
func (m *Mongo) URI() string { return m.uri }

// DataDir returns the directory holding the SQLite files.
func (m *Mongo) DataDir() string { return m.dir }

// Stop shuts FerretDB down and, in temporary mode, removes its directory.
// FerretDB gives clients still connected up to 3 seconds to leave, so
// disconnect clients first for a fast stop. It is safe to call more than once.
func (m *Mongo) Stop() error {
	m.stopOnce.Do(func() {
		if m.gate != nil {
			_ = m.gate.Close()
		}
		m.cancel()
		select {
		case <-m.done:
		case <-time.After(10 * time.Second):
			m.stopErr = errors.New("mongo stop: timed out waiting for FerretDB")
		}
		if m.temp {
			if err := os.RemoveAll(m.dir); err != nil {
				m.stopErr = errors.Join(m.stopErr, fmt.Errorf("mongo stop: %w", err))
			}
		}
	})
	return m.stopErr
}

// IndexIDs adds, to every collection of database that exists now, an SQLite
// index on exactly the expression FerretDB's UPDATE and DELETE (and
// find-by-_id) filter on, (_ferretdb_sjson->'$._id').
//
// FerretDB v1's own _id index is on _ferretdb_sjson->"_id", a different
// expression, so SQLite cannot use it and every update by _id scans the whole
// table. The extra index is invisible to FerretDB (listIndexes does not show
// it) and is dropped with the collection. Collections created later do not
// get it: call IndexIDs again after creating them (it is idempotent and
// cheap). It opens <DataDir>/<database>.sqlite directly with the same driver
// FerretDB uses; SQLite's locking and a busy timeout make that safe while
// FerretDB runs. A database that does not exist yet is not an error.
//
// This is specific to the embedded store: real MongoDB needs nothing like it.
func (m *Mongo) IndexIDs(ctx context.Context, database string) error {
	if database == "" || strings.ContainsAny(database, `/\`+"\x00") || database == "." || database == ".." {
		return fmt.Errorf("mongo index ids: invalid database name %q", database)
	}
	file := filepath.Join(m.dir, database+".sqlite")
	if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("mongo index ids: %w", err)
	}
	dsn := "file:" + (&url.URL{Path: file}).EscapedPath() + "?" +
		url.Values{"mode": {"rw"}, "_pragma": {"busy_timeout(10000)"}}.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return fmt.Errorf("mongo index ids: open %s: %w", file, err)
	}
	defer func() { _ = db.Close() }()
	db.SetMaxOpenConns(1)

	tables, err := ferretTables(ctx, db)
	if err != nil {
		return fmt.Errorf("mongo index ids: %s: %w", file, err)
	}
	for _, table := range tables {
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s ON %s ((_ferretdb_sjson->'$._id'))`,
			quoteIdent(table+"_id_expr"), quoteIdent(table))
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("mongo index ids: table %s: %w", table, err)
		}
	}
	return nil
}

func ferretTables(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx, `SELECT table_name FROM "_ferretdb_collections"`)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return nil, nil // database file without collections yet
		}
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		tables = append(tables, t)
	}
	return tables, rows.Err()
}

// demoteResponses turns FerretDB's per-request dumps of failed responses
// ("Response header: ...", "Response message: ..."), logged at WARN for every
// command answered with ok:0 (the driver's endSessions on each disconnect, for
// one), into DEBUG records.
type demoteResponses struct{ next slog.Handler }

func (h *demoteResponses) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h *demoteResponses) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn && (strings.HasPrefix(r.Message, "Response header: ") ||
		strings.HasPrefix(r.Message, "Response message:")) {
		r.Level = slog.LevelDebug
		if !h.next.Enabled(ctx, r.Level) {
			return nil
		}
	}
	return h.next.Handle(ctx, r)
}

func (h *demoteResponses) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &demoteResponses{next: h.next.WithAttrs(attrs)}
}

func (h *demoteResponses) WithGroup(name string) slog.Handler {
	return &demoteResponses{next: h.next.WithGroup(name)}
}

// quoteIdent quotes an SQLite identifier.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
