package mongogate

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// startFerretDB starts a bare FerretDB on SQLite and returns its address.
func startFerretDB(t *testing.T) string {
	t.Helper()
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Handler:   "sqlite",
		SQLiteURL: "file:" + t.TempDir() + "/?_pragma=synchronous(off)",
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return f.MongoDBURI()[len("mongodb://"):][:len(f.MongoDBURI())-len("mongodb://")-1]
}

func startGate(t *testing.T, backend string) *Gate {
	t.Helper()
	g, err := Start(t.Context(), Config{Listen: "127.0.0.1:0", Backend: backend})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

func connect(t *testing.T, addr string) *mongo.Collection {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI("mongodb://" + addr + "/"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c.Database("gate").Collection("requests")
}

// race has two clients, each on its own connection pool as two processes
// would be, move the same queued documents out of queued: one to
// cancelled, one to running. It returns the rounds both won.
func race(t *testing.T, addr, prefix string, rounds int) (both int) {
	t.Helper()
	a, b := connect(t, addr), connect(t, addr)
	ctx := t.Context()
	for i := range rounds {
		id := fmt.Sprintf("%s%03d", prefix, i)
		if _, err := a.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "user_id", Value: "u1"}, {Key: "status", Value: "queued"}}); err != nil {
			t.Fatal(err)
		}
		var wins [2]bool
		var wg sync.WaitGroup
		for k, c := range []*mongo.Collection{a, b} {
			to := []string{"cancelled", "running"}[k]
			wg.Go(func() {
				err := c.FindOneAndUpdate(ctx,
					bson.D{{Key: "_id", Value: id}, {Key: "user_id", Value: "u1"}, {Key: "status", Value: bson.D{{Key: "$in", Value: bson.A{"queued"}}}}},
					bson.D{{Key: "$set", Value: bson.D{{Key: "status", Value: to}, {Key: "by", Value: to}}}}).Err()
				wins[k] = err == nil
				if err != nil && err != mongo.ErrNoDocuments {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if wins[0] && wins[1] {
			both++
		}
		if !wins[0] && !wins[1] {
			t.Fatalf("%s: neither won", id)
		}
	}
	return both
}

// Through the gate, exactly one of a cancel and a start wins, every time;
// the same race straight to FerretDB is logged for comparison (it lets
// both win some rounds on most runs: that is the defect the gate fixes).
func TestGateMakesConditionalUpdatesAtomic(t *testing.T) {
	backend := startFerretDB(t)
	g := startGate(t, backend)
	const rounds = 100
	if both := race(t, g.Addr(), "gate", rounds); both != 0 {
		t.Fatalf("through the gate, both won %d of %d rounds", both, rounds)
	}
	if g.Stats().Decided.Load() == 0 {
		t.Fatal("the gate decided no conditional write; it cannot have cut the filters to _id")
	}
	t.Logf("straight to FerretDB, both won %d of %d rounds", race(t, backend, "direct", rounds), rounds)
}

// Updates and deletes keep their meaning through the gate: match, no
// match, upsert, many documents, and conditions the gate does not decide.
func TestGateKeepsWriteResults(t *testing.T) {
	g := startGate(t, startFerretDB(t))
	c := connect(t, g.Addr())
	ctx := t.Context()
	if _, err := c.InsertMany(ctx, []any{
		bson.D{{Key: "_id", Value: "a"}, {Key: "n", Value: int32(1)}, {Key: "tags", Value: bson.A{"x"}}},
		bson.D{{Key: "_id", Value: "b"}, {Key: "n", Value: int64(2)}},
	}); err != nil {
		t.Fatal(err)
	}
	check := func(what string, got, want int64) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %d, want %d", what, got, want)
		}
	}
	res, err := c.UpdateOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "n", Value: 1.0}}, bson.D{{Key: "$set", Value: bson.D{{Key: "m", Value: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	check("update a where n = 1.0 (an int32 1)", res.MatchedCount, 1)
	res, err = c.UpdateOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "n", Value: 2}}, bson.D{{Key: "$set", Value: bson.D{{Key: "m", Value: 2}}}})
	if err != nil {
		t.Fatal(err)
	}
	check("update a where n = 2", res.MatchedCount, 0)
	res, err = c.UpdateOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "tags", Value: "x"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "m", Value: 3}}}})
	if err != nil {
		t.Fatal(err)
	}
	check("update a where tags holds x (left to FerretDB)", res.MatchedCount, 1)
	res, err = c.UpdateOne(ctx, bson.D{{Key: "_id", Value: "c"}, {Key: "n", Value: 3}}, bson.D{{Key: "$set", Value: bson.D{{Key: "m", Value: 4}}}}, options.UpdateOne().SetUpsert(true))
	if err != nil {
		t.Fatal(err)
	}
	check("upsert c", res.UpsertedCount, 1)
	res, err = c.UpdateMany(ctx, bson.D{{Key: "n", Value: bson.D{{Key: "$gte", Value: 2}}}}, bson.D{{Key: "$set", Value: bson.D{{Key: "big", Value: true}}}})
	if err != nil {
		t.Fatal(err)
	}
	check("update many where n ≥ 2", res.MatchedCount, 2)
	d, err := c.DeleteOne(ctx, bson.D{{Key: "_id", Value: "b"}, {Key: "big", Value: bson.D{{Key: "$exists", Value: false}}}})
	if err != nil {
		t.Fatal(err)
	}
	check("delete b where big is missing", d.DeletedCount, 0)
	d, err = c.DeleteOne(ctx, bson.D{{Key: "_id", Value: "b"}, {Key: "big", Value: true}, {Key: "gone", Value: nil}})
	if err != nil {
		t.Fatal(err)
	}
	check("delete b where big and gone is null", d.DeletedCount, 1)
	var before bson.M
	err = c.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "m", Value: bson.D{{Key: "$nin", Value: bson.A{1, 3}}}}}, bson.D{{Key: "$set", Value: bson.D{{Key: "m", Value: 5}}}}).Decode(&before)
	if err != mongo.ErrNoDocuments {
		t.Errorf("findAndModify a where m not in [1 3] (m is 3): %v %v, want no document", before, err)
	}
	err = c.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "m", Value: bson.D{{Key: "$ne", Value: 1}}}}, bson.D{{Key: "$set", Value: bson.D{{Key: "m", Value: 5}}}}).Decode(&before)
	if err != nil || before["m"] != int32(3) {
		t.Errorf("findAndModify a where m ≠ 1: %v %v, want the document before, m 3", before, err)
	}
	n, err := c.CountDocuments(ctx, bson.D{{Key: "m", Value: 5}})
	if err != nil || n != 1 {
		t.Errorf("documents with m 5: %d %v, want 1", n, err)
	}
	if g.Stats().Decided.Load() == 0 || g.Stats().Exclusive.Load() == 0 {
		t.Errorf("stats decided %d exclusive %d: every path should have run", g.Stats().Decided.Load(), g.Stats().Exclusive.Load())
	}
}

// A client that goes away mid-command leaves no lock behind.
func TestGateReleasesLocksOfClosedConnections(t *testing.T) {
	g := startGate(t, startFerretDB(t))
	c := connect(t, g.Addr())
	ctx := t.Context()
	if _, err := c.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}}); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		raw, err := net.Dial("tcp", g.Addr())
		if err != nil {
			t.Fatal(err)
		}
		_ = raw.Close()
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.UpdateOne(ctx, bson.D{{Key: "_id", Value: "a"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "x", Value: 1}}}})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("update blocked")
	}
}

func TestMatches(t *testing.T) {
	doc, _ := bson.Marshal(bson.D{{Key: "s", Value: "queued"}, {Key: "n", Value: int64(3)}, {Key: "z", Value: nil}, {Key: "arr", Value: bson.A{1}}})
	for _, c := range []struct {
		name             string
		cond             bson.D
		matched, decided bool
	}{
		{"equal string", bson.D{{Key: "s", Value: "queued"}}, true, true},
		{"other string", bson.D{{Key: "s", Value: "running"}}, false, true},
		{"in", bson.D{{Key: "s", Value: bson.D{{Key: "$in", Value: bson.A{"running", "queued"}}}}}, true, true},
		{"nin", bson.D{{Key: "s", Value: bson.D{{Key: "$nin", Value: bson.A{"queued"}}}}}, false, true},
		{"number across types", bson.D{{Key: "n", Value: 3.0}}, true, true},
		{"null matches null", bson.D{{Key: "z", Value: nil}}, true, true},
		{"null matches missing", bson.D{{Key: "missing", Value: nil}}, true, true},
		{"missing is not a string", bson.D{{Key: "missing", Value: "x"}}, false, true},
		{"exists", bson.D{{Key: "s", Value: bson.D{{Key: "$exists", Value: true}}}, {Key: "missing", Value: bson.D{{Key: "$exists", Value: false}}}}, true, true},
		{"ne on missing", bson.D{{Key: "missing", Value: bson.D{{Key: "$ne", Value: "x"}}}}, true, true},
		{"range: not decided", bson.D{{Key: "n", Value: bson.D{{Key: "$gt", Value: 1}}}}, false, false},
		{"array field: not decided", bson.D{{Key: "arr", Value: 1}}, false, false},
		{"dotted: not decided", bson.D{{Key: "a.b", Value: 1}}, false, false},
		{"or: not decided", bson.D{{Key: "$or", Value: bson.A{}}}, false, false},
		{"embedded document: not decided", bson.D{{Key: "s", Value: bson.D{{Key: "k", Value: 1}}}}, false, false},
	} {
		f, _ := bson.Marshal(c.cond)
		elems, _ := bson.Raw(f).Elements()
		m, d := matches(doc, elems)
		if d != c.decided || (d && m != c.matched) {
			t.Errorf("%s: matched %v decided %v, want %v %v", c.name, m, d, c.matched, c.decided)
		}
	}
}
