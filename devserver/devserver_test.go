package devserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	sdktemporal "go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

const taskQueue = "devserver-test"

var (
	userIDKey      = sdktemporal.NewSearchAttributeKeyKeyword("UserId")
	queueLengthKey = sdktemporal.NewSearchAttributeKeyInt64("QueueLength")
	pausedKey      = sdktemporal.NewSearchAttributeKeyBool("Paused")
)

// greetWorkflow upserts UserId and runs one activity.
func greetWorkflow(ctx workflow.Context, userID string) (string, error) {
	if err := workflow.UpsertTypedSearchAttributes(ctx, userIDKey.ValueSet(userID)); err != nil {
		return "", err
	}
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 10 * time.Second})
	var out string
	err := workflow.ExecuteActivity(ctx, greet, userID).Get(ctx, &out)
	return out, err
}

func greet(_ context.Context, name string) (string, error) { return "hello " + name, nil }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func startTemporal(t *testing.T, cfg TemporalConfig) *Temporal {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	ts, err := StartTemporal(ctx, cfg)
	if err != nil {
		t.Fatalf("StartTemporal: %v", err)
	}
	t.Logf("temporal at %s ready in %v (db %q)", ts.Address(), time.Since(start).Round(time.Millisecond), ts.DBFile())
	t.Cleanup(func() { stopTemporal(t, ts) })
	return ts
}

func stopTemporal(t *testing.T, ts *Temporal) {
	t.Helper()
	start := time.Now()
	if err := ts.Stop(); err != nil {
		t.Errorf("Temporal.Stop: %v", err)
	}
	t.Logf("temporal at %s stopped in %v", ts.Address(), time.Since(start).Round(time.Millisecond))
}

// connect returns a client and a started worker for greetWorkflow, and a
// func stopping both; it also runs at cleanup, before the server's (cleanups
// run last-in first-out).
func connect(t *testing.T, ts *Temporal) (client.Client, func()) {
	t.Helper()
	c, err := client.Dial(client.Options{
		HostPort:  ts.Address(),
		Namespace: ts.Namespace(),
		Logger:    sdklog.NewStructuredLogger(testLogger(t)),
	})
	if err != nil {
		t.Fatalf("client.Dial: %v", err)
	}
	w := worker.New(c, taskQueue, worker.Options{})
	w.RegisterWorkflow(greetWorkflow)
	w.RegisterActivity(greet)
	if err := w.Start(); err != nil {
		t.Fatalf("worker start: %v", err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { w.Stop(); c.Close() }) }
	t.Cleanup(stop)
	return c, stop
}

func runGreet(t *testing.T, c client.Client, id, userID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                    id,
		TaskQueue:             taskQueue,
		TypedSearchAttributes: sdktemporal.NewSearchAttributes(queueLengthKey.ValueSet(3), pausedKey.ValueSet(false)),
	}, greetWorkflow, userID)
	if err != nil {
		t.Fatalf("ExecuteWorkflow: %v", err)
	}
	var out string
	if err := run.Get(ctx, &out); err != nil {
		t.Fatalf("workflow %s: %v", id, err)
	}
	if out != "hello "+userID {
		t.Fatalf("workflow result = %q", out)
	}
}

// waitVisible waits until the visibility query returns exactly the workflow id.
func waitVisible(t *testing.T, c client.Client, ns, query, id string) {
	t.Helper()
	err := poll(context.Background(), 15*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: ns, Query: query})
		if err != nil {
			return err
		}
		if n := len(resp.GetExecutions()); n != 1 || resp.GetExecutions()[0].GetExecution().GetWorkflowId() != id {
			return fmt.Errorf("query %q: %d executions", query, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestTemporalInMemory(t *testing.T) {
	ts := startTemporal(t, TemporalConfig{})
	other := startTemporal(t, TemporalConfig{Namespace: "second"}) // must not share storage
	if ts.Address() == other.Address() {
		t.Fatalf("both servers on %s", ts.Address())
	}
	c, _ := connect(t, ts)
	runGreet(t, c, "wf-mem", "u-1")

	waitVisible(t, c, ts.Namespace(), `UserId = "u-1" AND QueueLength = 3 AND Paused = false`, "wf-mem")

	oc, err := client.Dial(client.Options{HostPort: other.Address(), Namespace: "default",
		Logger: sdklog.NewStructuredLogger(testLogger(t))})
	if err != nil {
		t.Fatalf("dial second server: %v", err)
	}
	defer oc.Close()
	ctx := context.Background()
	_, err = oc.DescribeWorkflowExecution(ctx, "wf-mem", "")
	var notFound *serviceerror.NamespaceNotFound
	if !errors.As(err, &notFound) {
		t.Fatalf("second server: namespace default should not exist (it has %q), got %v", other.Namespace(), err)
	}
	oc2, err := client.Dial(client.Options{HostPort: other.Address(), Namespace: "second",
		Logger: sdklog.NewStructuredLogger(testLogger(t))})
	if err != nil {
		t.Fatalf("dial second server: %v", err)
	}
	defer oc2.Close()
	if _, err := oc2.DescribeWorkflowExecution(ctx, "wf-mem", ""); !errors.As(err, new(*serviceerror.NotFound)) {
		t.Fatalf("second server sees the first server's workflow: %v", err)
	}

	t.Run("UI", func(t *testing.T) {
		u, err := StartUI(UIConfig{TemporalAddress: ts.Address(), Namespace: ts.Namespace()})
		if err != nil {
			t.Fatalf("StartUI: %v", err)
		}
		defer func() {
			if err := u.Stop(); err != nil {
				t.Errorf("UI.Stop: %v", err)
			}
		}()
		resp, err := http.Get(u.URL() + "/")
		if err != nil {
			t.Fatalf("GET /: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") ||
			!strings.Contains(string(body), "<html") || !strings.Contains(string(body), "/_app/") {
			t.Fatalf("GET / = %s %q, %d bytes: %.200s", resp.Status, resp.Header.Get("Content-Type"), len(body), body)
		}
		// One of the SPA's scripts, from the embedded assets.
		m := regexp.MustCompile(`/_app/[^"']+\.js`).FindString(string(body))
		if m == "" {
			t.Fatalf("no /_app/*.js in index.html: %.500s", body)
		}
		resp, err = http.Get(u.URL() + m)
		if err != nil {
			t.Fatalf("GET %s: %v", m, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %s", m, resp.Status)
		}
		// The UI's API proxies to the Temporal frontend.
		resp, err = http.Get(u.URL() + "/api/v1/namespaces/" + ts.Namespace() + "/workflows")
		if err != nil {
			t.Fatalf("GET workflows: %v", err)
		}
		body, _ = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "wf-mem") {
			t.Fatalf("GET workflows = %s %.300s", resp.Status, body)
		}
		t.Logf("UI at %s: GET / is the SPA's HTML, %s served, API lists wf-mem", u.URL(), m)
	})
}

const persistDirEnv = "DEVSERVER_TEST_PERSIST_DIR"

// TestTemporalPersistHelper is run by TestTemporalPersistent in a child
// process: it writes a workflow into the file and exits.
func TestTemporalPersistHelper(t *testing.T) {
	dir := os.Getenv(persistDirEnv)
	if dir == "" {
		t.Skip("helper process for TestTemporalPersistent")
	}
	ts := startTemporal(t, TemporalConfig{DataDir: dir})
	c, _ := connect(t, ts)
	runGreet(t, c, "wf-persist", "u-file")
}

func TestTemporalPersistent(t *testing.T) {
	dir := t.TempDir()
	// First life in another process, so nothing survives in memory.
	cmd := exec.Command(os.Args[0], "-test.run=^TestTemporalPersistHelper$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), persistDirEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestTemporalPersistHelper") {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "ready in") || strings.Contains(line, "stopped in") {
			t.Logf("helper process: %s", strings.TrimSpace(line))
		}
	}
	if _, err := os.Stat(filepath.Join(dir, TemporalDBFile)); err != nil {
		t.Fatalf("db file: %v", err)
	}

	check := func(t *testing.T, ts *Temporal, c client.Client) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		var res string
		if err := c.GetWorkflow(ctx, "wf-persist", "").Get(ctx, &res); err != nil || res != "hello u-file" {
			t.Fatalf("earlier workflow result = %q, %v", res, err)
		}
		iter := c.GetWorkflowHistory(ctx, "wf-persist", "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		var events, last int
		for iter.HasNext() {
			ev, err := iter.Next()
			if err != nil {
				t.Fatalf("history: %v", err)
			}
			events++
			last = int(ev.GetEventType())
		}
		if events < 5 || enumspb.EventType(last) != enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED {
			t.Fatalf("history: %d events, last %v", events, enumspb.EventType(last))
		}
		waitVisible(t, c, ts.Namespace(), `UserId = "u-file"`, "wf-persist")
		t.Logf("wf-persist: %d history events, completed, visible by UserId", events)
	}

	// Second life: a new process reopening the file.
	ts := startTemporal(t, TemporalConfig{DataDir: dir})
	c, disconnect := connect(t, ts)
	check(t, ts, c)
	runGreet(t, c, "wf-persist-2", "u-file-2")
	disconnect()
	stopTemporal(t, ts)

	// Third life: same process, same file.
	ts = startTemporal(t, TemporalConfig{DataDir: dir})
	c, _ = connect(t, ts)
	check(t, ts, c)
	waitVisible(t, c, ts.Namespace(), `UserId = "u-file-2"`, "wf-persist-2")
}

func startMongo(t *testing.T, cfg MongoConfig) (*Mongo, *mongo.Client) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := StartMongo(ctx, cfg)
	if err != nil {
		t.Fatalf("StartMongo: %v", err)
	}
	mc, err := mongo.Connect(options.Client().ApplyURI(m.URI()))
	if err != nil {
		t.Fatalf("mongo.Connect: %v", err)
	}
	t.Cleanup(func() {
		_ = mc.Disconnect(context.Background())
		start := time.Now()
		if err := m.Stop(); err != nil {
			t.Errorf("Mongo.Stop: %v", err)
		}
		t.Logf("mongo stopped in %v", time.Since(start).Round(time.Millisecond))
	})
	return m, mc
}

func TestMongo(t *testing.T) {
	m, mc := startMongo(t, MongoConfig{})
	ctx := context.Background()
	if !strings.HasPrefix(m.URI(), "mongodb://127.0.0.1:") {
		t.Fatalf("URI = %q", m.URI())
	}
	coll := mc.Database("turnstile").Collection("users")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "u1"}, {Key: "email", Value: "a@example.com"}}); err != nil {
		t.Fatalf("InsertOne: %v", err)
	}
	var got struct {
		ID    string `bson:"_id"`
		Email string `bson:"email"`
	}
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "u1"}}).Decode(&got); err != nil || got.Email != "a@example.com" {
		t.Fatalf("FindOne = %+v, %v", got, err)
	}
	_, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: "email", Value: 1}},
		Options: options.Index().SetUnique(true).SetName("email_unique"),
	})
	if err != nil {
		t.Fatalf("CreateOne index: %v", err)
	}
	_, err = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "u2"}, {Key: "email", Value: "a@example.com"}})
	if !mongo.IsDuplicateKeyError(err) {
		t.Fatalf("duplicate email: want duplicate key error, got %v", err)
	}

	// IndexIDs: the UPDATE FerretDB issues must use the new index.
	if err := m.IndexIDs(ctx, "turnstile"); err != nil {
		t.Fatalf("IndexIDs: %v", err)
	}
	if err := m.IndexIDs(ctx, "turnstile"); err != nil { // idempotent
		t.Fatalf("IndexIDs again: %v", err)
	}
	if err := m.IndexIDs(ctx, "nosuchdb"); err != nil {
		t.Fatalf("IndexIDs on a missing database: %v", err)
	}
	if err := m.IndexIDs(ctx, "../x"); err == nil {
		t.Fatal("IndexIDs accepted a path as database name")
	}
	plan := updatePlan(t, m, "turnstile", "users")
	if !strings.Contains(plan, "_id_expr") {
		t.Fatalf("UPDATE plan does not use the index: %s", plan)
	}
	t.Logf("UPDATE by _id plan after IndexIDs: %s", plan)
	if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "u1"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "email", Value: "b@example.com"}}}}); err != nil {
		t.Fatalf("UpdateOne: %v", err)
	}
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "u1"}}).Decode(&got); err != nil || got.Email != "b@example.com" {
		t.Fatalf("FindOne after update = %+v, %v", got, err)
	}
	// FerretDB's listIndexes does not show the extra SQLite index.
	cur, err := coll.Indexes().List(ctx)
	if err != nil {
		t.Fatalf("list indexes: %v", err)
	}
	var idx []bson.M
	if err := cur.All(ctx, &idx); err != nil || len(idx) != 2 {
		t.Fatalf("indexes = %v, %v", idx, err)
	}
}

// updatePlan returns SQLite's plan for the UPDATE FerretDB runs for an
// update by _id in database.collection.
func updatePlan(t *testing.T, m *Mongo, database, collection string) string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(m.DataDir(), database+".sqlite")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var table string
	if err := db.QueryRow(`SELECT table_name FROM "_ferretdb_collections" WHERE name = ?`, collection).Scan(&table); err != nil {
		t.Fatalf("table of %s: %v", collection, err)
	}
	rows, err := db.Query(fmt.Sprintf(`EXPLAIN QUERY PLAN UPDATE %s SET _ferretdb_sjson = ? WHERE _ferretdb_sjson->'$._id' = ?`, quoteIdent(table)), "{}", `"u1"`)
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	return strings.Join(plan, "; ")
}

func TestMongoPersistent(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	m, mc := startMongo(t, MongoConfig{DataDir: dir})
	coll := mc.Database("app").Collection("things")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "k"}, {Key: "v", Value: 42}}); err != nil {
		t.Fatalf("InsertOne: %v", err)
	}
	_ = mc.Disconnect(ctx)
	if err := m.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "app.sqlite")); err != nil {
		t.Fatalf("data file: %v", err)
	}

	_, mc = startMongo(t, MongoConfig{DataDir: dir})
	var got bson.M
	if err := mc.Database("app").Collection("things").FindOne(ctx, bson.D{{Key: "_id", Value: "k"}}).Decode(&got); err != nil || got["v"] != int32(42) {
		t.Fatalf("after restart FindOne = %v, %v", got, err)
	}
}

// TestMongoIndexIDsSpeed measures updateOne and findOne by _id before and
// after IndexIDs. Set DEVSERVER_BENCH=1 (optionally DEVSERVER_BENCH_DOCS,
// DEVSERVER_BENCH_DIR for a persistent directory) to run it.
func TestMongoIndexIDsSpeed(t *testing.T) {
	if os.Getenv("DEVSERVER_BENCH") == "" {
		t.Skip("set DEVSERVER_BENCH=1 to measure")
	}
	docs := 5000
	if s := os.Getenv("DEVSERVER_BENCH_DOCS"); s != "" {
		if _, err := fmt.Sscan(s, &docs); err != nil {
			t.Fatal(err)
		}
	}
	cfg := MongoConfig{}
	if os.Getenv("DEVSERVER_BENCH_DIR") != "" {
		cfg.DataDir = t.TempDir()
	}
	m, mc := startMongo(t, cfg)
	ctx := context.Background()
	coll := mc.Database("bench").Collection("items")

	start := time.Now()
	for i := range docs {
		doc := bson.D{{Key: "_id", Value: fmt.Sprintf("item-%06d", i)}, {Key: "owner", Value: fmt.Sprintf("u%d", i%50)}, {Key: "n", Value: 0}}
		if _, err := coll.InsertOne(ctx, doc); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("mode %q: %d inserts: %.0f/s", cfg.DataDir, docs, float64(docs)/time.Since(start).Seconds())

	measure := func(label string) {
		const n = 300
		start := time.Now()
		for i := range n {
			id := fmt.Sprintf("item-%06d", (i*7919)%docs)
			res, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}})
			if err != nil || res.ModifiedCount != 1 {
				t.Fatalf("UpdateOne %s: %+v %v", id, res, err)
			}
		}
		upd := float64(n) / time.Since(start).Seconds()
		start = time.Now()
		for i := range n {
			id := fmt.Sprintf("item-%06d", (i*104729)%docs)
			if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Err(); err != nil {
				t.Fatal(err)
			}
		}
		find := float64(n) / time.Since(start).Seconds()
		t.Logf("%s, %d docs: updateOne by _id %.0f/s, findOne by _id %.0f/s; plan: %s",
			label, docs, upd, find, updatePlan(t, m, "bench", "items"))
	}
	measure("before IndexIDs")
	start = time.Now()
	if err := m.IndexIDs(ctx, "bench"); err != nil {
		t.Fatal(err)
	}
	t.Logf("IndexIDs took %v", time.Since(start).Round(time.Millisecond))
	measure("after IndexIDs")
}

func TestPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	if _, err := StartTemporal(context.Background(), TemporalConfig{Port: port}); err == nil || !strings.Contains(err.Error(), "not free") {
		t.Errorf("StartTemporal on a used port: %v", err)
	}
	if _, err := StartUI(UIConfig{Port: port, TemporalAddress: "127.0.0.1:1"}); err == nil {
		t.Error("StartUI on a used port: no error")
	}
	if _, err := StartMongo(context.Background(), MongoConfig{Port: port}); err == nil {
		t.Error("StartMongo on a used port: no error")
	}
	// A FerretDB backend left unclosed panics from its finalizer: make the
	// GC run finalizers now rather than during some later test.
	runtime.GC()
	runtime.GC()
	time.Sleep(100 * time.Millisecond)
}

// Both embedded stores fsync every commit unless told otherwise: a 202
// means MongoDB has the request, and a power loss must not take back
// either file's tail (docs/performance.md, "Durability").
func TestStoresFsyncEveryCommitByDefault(t *testing.T) {
	sync, err := synchronousMode("")
	if err != nil || sync != "full" {
		t.Fatalf("default synchronous = %q, %v; want full", sync, err)
	}
	if _, err := synchronousMode("off"); err == nil {
		t.Fatal("synchronous off accepted for a data directory")
	}
	conf, _, err := temporalSQLConfig(t.TempDir(), sync)
	if err != nil {
		t.Fatal(err)
	}
	if got := conf.ConnectAttributes["synchronous"]; got != "full" || conf.ConnectAttributes["journal_mode"] != "wal" {
		t.Fatalf("Temporal's SQLite attributes %v, want WAL with synchronous full", conf.ConnectAttributes)
	}
	if u := ferretSQLiteURL("/data/mongo", "synchronous("+sync+")"); !strings.Contains(u, "_pragma=synchronous%28full%29") {
		t.Fatalf("FerretDB's SQLite URL %q does not set synchronous(full)", u)
	}
}
