// Package store keeps Turnstile's system of record in MongoDB: users, every
// request's status and outcome, and refresh tokens.
//
// The code is plain MongoDB and runs unchanged on FerretDB v1 (SQLite), the
// embedded default, so it uses no transactions, TTL or partial indexes, no
// change streams and no aggregation-pipeline updates. A request's state
// changes are single-document conditional updates (filter by _id and
// status): atomic on MongoDB, and on the embedded FerretDB v1 because every
// client reaches it through devserver/mongogate, which serialises each
// document's writes and looks {_id, …} filters up by _id. Refresh tokens
// are designed to need no atomic update at all. Lookups by ID filter on _id
// alone, the only filter FerretDB v1 runs in SQLite rather than by a scan;
// for the same reason a user is found by email through user_emails, whose
// _id is the email.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
)

// Sentinel errors. Returned errors wrap them (and the driver's error, when
// there is one), so test with errors.Is.
var (
	// ErrNotFound: no such document, or it belongs to another user.
	ErrNotFound = errors.New("not found")
	// ErrDuplicate: a unique key (email, idempotency key, ID) is taken.
	ErrDuplicate = errors.New("duplicate")
	// ErrConflict: the document exists but its state forbids the change.
	ErrConflict = errors.New("conflict")
)

// Collection names.
const (
	UsersCollection         = "users"
	UserEmailsCollection    = "user_emails" // email → user ID; see Users
	RequestsCollection      = "requests"
	RefreshTokensCollection = "refresh_tokens"
)

// Default connection timeouts. Server selection bounds how long an operation
// waits when MongoDB is unreachable, so the API can answer 503 promptly
// instead of hanging.
const (
	DefaultServerSelectionTimeout = 5 * time.Second
	DefaultConnectTimeout         = 5 * time.Second
)

// List page sizes: a limit ≤ 0 means DefaultListLimit, and no page is longer
// than MaxListLimit.
const (
	DefaultListLimit = 50
	MaxListLimit     = 1000
)

// Options tune Connect. Zero fields take the defaults.
type Options struct {
	// ServerSelectionTimeout: how long an operation waits for a usable server.
	ServerSelectionTimeout time.Duration
	// ConnectTimeout: how long opening one TCP connection may take.
	ConnectTimeout time.Duration
	// Timeout, if positive, bounds every operation (the driver's client-side
	// operation timeout); otherwise only the caller's context does.
	Timeout time.Duration
	// AppName shows in the server's logs and currentOp.
	AppName string
	// WriteConcern is how many members must have a write, journaled, before
	// MongoDB acknowledges it (and Turnstile answers 202): "majority" (the
	// default: an acknowledged write survives a failover) or "1" (the
	// primary alone; a failover can roll back acknowledged writes); "uri"
	// leaves it to the connection string's w and journal options.
	WriteConcern string
}

// WriteConcernOf is the write concern a WriteConcern setting names, nil
// for "uri" (the connection string's, or the server's default).
func WriteConcernOf(mode string) (*writeconcern.WriteConcern, error) {
	journal := true
	switch mode {
	case "", "majority":
		return &writeconcern.WriteConcern{W: writeconcern.WCMajority, Journal: &journal}, nil
	case "1":
		return &writeconcern.WriteConcern{W: 1, Journal: &journal}, nil
	case "uri":
		return nil, nil
	}
	return nil, fmt.Errorf("store: write concern %q: want majority, 1 or uri", mode)
}

// Store is the MongoDB database with its repositories.
type Store struct {
	Users    *Users
	Requests *Requests
	Queues   *Queues
	Tokens   *RefreshTokens

	client *mongo.Client
	db     *mongo.Database
}

// Connect opens a client for uri with the default Options, checks that the
// server answers within ctx, and returns the Store of database.
func Connect(ctx context.Context, uri, database string) (*Store, error) {
	return ConnectWith(ctx, uri, database, Options{})
}

// ConnectWith is Connect with explicit Options.
func ConnectWith(ctx context.Context, uri, database string, o Options) (*Store, error) {
	if database == "" {
		return nil, errors.New("store: empty database name")
	}
	opts := options.Client().ApplyURI(uri).
		SetServerSelectionTimeout(orDefault(o.ServerSelectionTimeout, DefaultServerSelectionTimeout)).
		SetConnectTimeout(orDefault(o.ConnectTimeout, DefaultConnectTimeout))
	if o.Timeout > 0 {
		opts.SetTimeout(o.Timeout)
	}
	if o.AppName != "" {
		opts.SetAppName(o.AppName)
	}
	wc, err := WriteConcernOf(o.WriteConcern)
	if err != nil {
		return nil, err
	}
	if wc != nil {
		opts.SetWriteConcern(wc)
	}
	client, err := mongo.Connect(opts)
	if err != nil {
		return nil, fmt.Errorf("store: connect: %w", err)
	}
	s := newStore(client, client.Database(database))
	if err := s.Ping(ctx); err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, err
	}
	return s, nil
}

func newStore(client *mongo.Client, db *mongo.Database) *Store {
	queues := &Queues{c: db.Collection(QueuesCollection)}
	return &Store{
		Users: &Users{
			c:      db.Collection(UsersCollection),
			emails: db.Collection(UserEmailsCollection),
		},
		Requests: &Requests{
			c:      db.Collection(RequestsCollection),
			keys:   db.Collection(IdempotencyCollection),
			queues: queues,
		},
		Queues: queues,
		Tokens: &RefreshTokens{
			c:        db.Collection(RefreshTokensCollection),
			families: db.Collection(RefreshFamiliesCollection),
		},
		client: client,
		db:     db,
	}
}

// Ping checks that the server answers; readiness probes call it.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx, nil); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// Close disconnects, waiting within ctx for operations in progress.
func (s *Store) Close(ctx context.Context) error {
	if err := s.client.Disconnect(ctx); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// DropDatabase deletes the whole database. It exists for tests.
func (s *Store) DropDatabase(ctx context.Context) error {
	if err := s.db.Drop(ctx); err != nil {
		return fmt.Errorf("store: drop database: %w", err)
	}
	return nil
}

// EnsureIndexes creates the collections' indexes (and so the collections),
// and gives users created before user_emails existed their email document.
// It is idempotent: indexes that exist with the same keys and options are
// left alone, and the email backfill only walks the users when the two
// collections' counts differ.
func (s *Store) EnsureIndexes(ctx context.Context) error {
	for _, set := range []struct {
		c       *mongo.Collection
		indexes []mongo.IndexModel
	}{
		{s.Users.c, userIndexes},
		{s.Requests.c, requestIndexes},
		{s.Tokens.c, refreshTokenIndexes},
		// No secondary indexes: these are read by _id only; the index
		// creates the collection, so the embedded launcher's _id
		// expression index goes on it too.
		{s.Queues.c, []mongo.IndexModel{{Keys: bson.D{{Key: "updated_at", Value: 1}}, Options: options.Index().SetName("updated_at")}}},
		{s.Requests.keys, []mongo.IndexModel{{Keys: bson.D{{Key: "ids", Value: 1}}, Options: options.Index().SetName("ids")}}},
		{s.Tokens.families, refreshFamilyIndexes},
	} {
		// One index per command: FerretDB v1.24 panics (and drops the
		// connection) when one createIndexes command names several indexes
		// of which more than one exists already.
		for _, index := range set.indexes {
			if _, err := set.c.Indexes().CreateOne(ctx, index); err != nil {
				return fmt.Errorf("store: indexes of %s: %w", set.c.Name(), err)
			}
		}
	}
	return s.Users.ensureEmails(ctx)
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func clampLimit(limit int) int64 {
	switch {
	case limit <= 0:
		return DefaultListLimit
	case limit > MaxListLimit:
		return MaxListLimit
	}
	return int64(limit)
}

// wrap adds op to err and, for duplicate-key errors, ErrDuplicate.
func wrap(op string, err error) error {
	if mongo.IsDuplicateKeyError(err) {
		return fmt.Errorf("store: %s: %w: %w", op, ErrDuplicate, err)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

// notFound turns the driver's ErrNoDocuments into ErrNotFound.
func notFound(op string, err error) error {
	if errors.Is(err, mongo.ErrNoDocuments) {
		return fmt.Errorf("store: %s: %w", op, ErrNotFound)
	}
	return wrap(op, err)
}
