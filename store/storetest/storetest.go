// Package storetest gives tests a MongoDB-wire server and a store.Store on
// it: the server named by TURNSTILE_TEST_MONGODB_URI when that is set, else
// an embedded FerretDB on SQLite in the test's temporary directory.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"

	"github.com/turnstile/turnstile/devserver/mongogate"

	"github.com/turnstile/turnstile/store"
)

// EnvURI names the environment variable that points tests at a real server.
const EnvURI = "TURNSTILE_TEST_MONGODB_URI"

// URI returns the URI of a MongoDB-wire server for t: $TURNSTILE_TEST_MONGODB_URI,
// or an embedded FerretDB (SQLite handler) that t's cleanup stops.
func URI(t testing.TB) string {
	t.Helper()
	uri, _ := server(t)
	return uri
}

func server(t testing.TB) (uri string, embedded bool) {
	t.Helper()
	if uri := os.Getenv(EnvURI); uri != "" {
		return uri, false
	}
	return StartFerretDB(t), true
}

// StartFerretDB starts an embedded FerretDB with its SQLite files in
// t.TempDir(), behind a mongogate.Gate on a free port of 127.0.0.1 (as the
// embedded launcher runs it), and returns the gate's URI. Only errors are
// logged.
func StartFerretDB(t testing.TB) string {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Handler:   "sqlite",
		SQLiteURL: "file:" + t.TempDir() + "/",
		Logger:    log,
	})
	if err != nil {
		t.Fatalf("storetest: ferretdb: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	// MongoDBURI blocks until Run has the listener up.
	u, err := url.Parse(f.MongoDBURI())
	if err != nil {
		t.Fatalf("storetest: ferretdb uri: %v", err)
	}
	g, err := mongogate.Start(ctx, mongogate.Config{Listen: "127.0.0.1:0", Backend: u.Host, Logger: log})
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return "mongodb://" + g.Addr() + "/"
}

// DatabaseName returns a fresh database name that FerretDB and MongoDB both
// accept (letters, digits, _ and -; at most 63 bytes), derived from t's name.
func DatabaseName(t testing.TB) string {
	t.Helper()
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := regexp.MustCompile(`[^a-zA-Z0-9_]+`).ReplaceAllString(t.Name(), "_")
	const maxPrefix = 63 - len("t__") - 8
	if len(name) > maxPrefix {
		name = name[:maxPrefix]
	}
	return "t_" + name + "_" + hex.EncodeToString(suffix)
}

// DB is a fresh database on a test server and a Store on it.
type DB struct {
	Store *store.Store
	URI   string // the server's
	Name  string // the database's
	// Embedded: the server is a FerretDB (behind its gate) this test started.
	Embedded bool
}

// New returns a Store on a fresh database of URI(t), with indexes ensured.
// t's cleanup drops the database and closes the store.
func New(t testing.TB) *store.Store {
	t.Helper()
	return Open(t).Store
}

// Open is New that also tells where the database is, for tests that look at
// the stored documents directly.
func Open(t testing.TB) DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := DB{Name: DatabaseName(t)}
	db.URI, db.Embedded = server(t)
	s, err := store.Connect(ctx, db.URI, db.Name)
	if err != nil {
		t.Fatalf("storetest: connect: %v", err)
	}
	db.Store = s
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.DropDatabase(ctx); err != nil {
			t.Logf("storetest: drop database: %v", err)
		}
		if err := s.Close(ctx); err != nil {
			t.Logf("storetest: close: %v", err)
		}
	})
	if err := s.EnsureIndexes(ctx); err != nil {
		t.Fatalf("storetest: indexes: %v", err)
	}
	return db
}
