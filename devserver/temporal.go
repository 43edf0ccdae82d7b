package devserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/common/membership/static"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/common/primitives"
	sqliteschema "go.temporal.io/server/schema/sqlite"
	temporalserver "go.temporal.io/server/temporal"
)

// TemporalDBFile is the name of the SQLite file kept in TemporalConfig.DataDir.
const TemporalDBFile = "temporal.sqlite"

const (
	clusterName     = "active"
	startupTimeout  = 60 * time.Second
	internalBindIP  = defaultHost // history, matching and worker never leave loopback
	readyPollPeriod = 100 * time.Millisecond
)

// searchAttributes are the custom search attributes registered on the namespace.
var searchAttributes = map[string]enumspb.IndexedValueType{
	"UserId":      enumspb.INDEXED_VALUE_TYPE_KEYWORD,
	"QueueLength": enumspb.INDEXED_VALUE_TYPE_INT,
	"Paused":      enumspb.INDEXED_VALUE_TYPE_BOOL,
}

// defaultDynamicConfig mirrors what the Temporal CLI dev server sets, plus
// switching off the call-home version check (no internet needed) and a
// transfer queue that reads as often as it has work (below).
var defaultDynamicConfig = map[string]any{
	// Search attributes are visible as soon as they are registered.
	dynamicconfig.ForceSearchAttributesCacheRefreshOnRead.Key().String(): true,
	// With the SA cache bypassed, persistence QPS limits have to go up (CLI values).
	dynamicconfig.FrontendPersistenceMaxQPS.Key().String(): 10000,
	dynamicconfig.HistoryPersistenceMaxQPS.Key().String():  45000,
	// CLI values: bigger host-level mutable state cache, more visibility RPS.
	dynamicconfig.HistoryCacheHostLevelMaxSize.Key().String():                 8096,
	dynamicconfig.FrontendMaxNamespaceVisibilityRPSPerInstance.Key().String(): 100,
	dynamicconfig.EnableServerVersionCheck.Key().String():                     false,
	// The transfer queue (it hands a signalled session's workflow task to
	// matching) reads at most 20 times a second per shard by default, and a dev
	// server has one shard: an idle session's next request then waited ~34 ms
	// between "workflow task scheduled" and "started" (pickup p50 41 ms). At
	// 1000 the same bench gives pickup p50 4 ms (docs/performance.md).
	dynamicconfig.TransferProcessorMaxPollRPS.Key().String(): 1000,
}

// TemporalConfig configures an embedded Temporal dev server.
type TemporalConfig struct {
	// DataDir is the directory holding the SQLite file (TemporalDBFile). It is
	// created if missing; the schema is set up when the file is new and reused
	// otherwise. "" keeps everything in memory.
	DataDir string
	// Host is the frontend bind IP; default "127.0.0.1" ("localhost" means
	// that too). History, matching and worker services always bind
	// 127.0.0.1 on free ports; the frontend HTTP API binds Host on a free port.
	Host string
	// Port is the frontend gRPC port; 0 picks a free port.
	Port int
	// Namespace is created if missing; default "default". Custom search
	// attributes UserId (Keyword), QueueLength (Int) and Paused (Bool) are
	// registered on it.
	Namespace string
	// Logger receives the server logs; nil means slog.Default().
	Logger *slog.Logger
	// LogLevel is the minimum level passed to Logger; nil means slog.LevelWarn.
	LogLevel slog.Leveler
	// Synchronous is SQLite's synchronous setting for the file: "full"
	// (default: every commit is fsynced, so a power loss loses nothing the
	// server acknowledged) or "normal" (WAL without an fsync per commit:
	// survives process crashes, may lose the last commits on power loss).
	Synchronous string
	// DynamicConfig overrides or adds dynamic config values by key, e.g.
	// "limit.maxIDLength": 255. Ints must be of type int.
	DynamicConfig map[string]any
}

// Temporal is a running embedded Temporal server (frontend, history,
// matching and worker services in this process, one history shard).
type Temporal struct {
	server      temporalserver.Server
	address     string
	httpAddress string
	namespace   string
	dbFile      string
	level       *stopLevel

	stopOnce sync.Once
	stopErr  error
}

// StartTemporal starts an embedded Temporal server and returns once its
// frontend answers and the namespace is usable.
func StartTemporal(ctx context.Context, cfg TemporalConfig) (*Temporal, error) {
	if cfg.Host == "" || cfg.Host == "localhost" { // the server wants an IP
		cfg.Host = defaultHost
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	level := &stopLevel{base: cfg.LogLevel}
	if level.base == nil {
		level.base = slog.LevelWarn
	}
	logger := quietLogger(cfg.Logger, level)

	// Frontend gRPC (unless given) and HTTP API ports on Host; history,
	// matching and worker gRPC ports on loopback.
	var (
		public []int
		err    error
	)
	if cfg.Port == 0 {
		public, err = freePorts(cfg.Host, 2)
	} else if err = checkPortFree(cfg.Host, cfg.Port); err == nil {
		for range 3 { // the kernel might hand out the port just released
			if public, err = freePorts(cfg.Host, 1); err != nil || public[0] != cfg.Port {
				break
			}
		}
		public = append([]int{cfg.Port}, public...)
	}
	if err != nil {
		return nil, fmt.Errorf("temporal frontend: %w", err)
	}
	cfg.Port = public[0]
	internal, err := freePorts(internalBindIP, 3)
	if err != nil {
		return nil, fmt.Errorf("temporal internal ports: %w", err)
	}
	address := net.JoinHostPort(dialHost(cfg.Host), strconv.Itoa(cfg.Port))
	httpAddress := net.JoinHostPort(dialHost(cfg.Host), strconv.Itoa(public[1]))

	sync, err := synchronousMode(cfg.Synchronous)
	if err != nil {
		return nil, fmt.Errorf("temporal: %w", err)
	}
	sqlConf, dbFile, err := temporalSQLConfig(cfg.DataDir, sync)
	if err != nil {
		return nil, err
	}
	ns, err := sqliteschema.NewNamespaceConfig(clusterName, cfg.Namespace, false, searchAttributes)
	if err != nil {
		return nil, fmt.Errorf("temporal namespace config: %w", err)
	}
	// No-op when the namespace already exists in a reused file.
	if err := sqliteschema.CreateNamespaces(sqlConf, ns); err != nil {
		return nil, fmt.Errorf("temporal create namespace %q: %w", cfg.Namespace, err)
	}

	conf := temporalServerConfig(cfg, address, public[1], internal, sqlConf)
	hosts := map[primitives.ServiceName]static.Hosts{
		primitives.FrontendService: static.SingleLocalHost(address),
		primitives.HistoryService:  static.SingleLocalHost(net.JoinHostPort(internalBindIP, strconv.Itoa(internal[0]))),
		primitives.MatchingService: static.SingleLocalHost(net.JoinHostPort(internalBindIP, strconv.Itoa(internal[1]))),
		primitives.WorkerService:   static.SingleLocalHost(net.JoinHostPort(internalBindIP, strconv.Itoa(internal[2]))),
	}
	dc := dynamicconfig.StaticClient{}
	for k, v := range defaultDynamicConfig {
		dc[dynamicconfig.MakeKey(k)] = v
	}
	for k, v := range cfg.DynamicConfig {
		dc[dynamicconfig.MakeKey(k)] = v
	}
	srvLogger := serverLogger{l: logger}
	srv, err := newTemporalServer(
		temporalserver.WithConfig(conf),
		temporalserver.ForServices(temporalserver.DefaultServices),
		temporalserver.WithStaticHosts(hosts),
		temporalserver.WithLogger(srvLogger),
		temporalserver.WithNamespaceLogger(srvLogger),
		temporalserver.WithAuthorizer(authorization.NewNoopAuthorizer()),
		temporalserver.WithClaimMapper(func(*config.Config) authorization.ClaimMapper {
			return authorization.NewNoopClaimMapper()
		}),
		temporalserver.WithDynamicConfigClient(dc),
	)
	if err != nil {
		return nil, fmt.Errorf("temporal new server: %w", err)
	}
	if err := recovered(srv.Start); err != nil {
		level.stopping.Store(true)
		_ = recovered(srv.Stop) // roll back whatever did start
		return nil, fmt.Errorf("temporal start: %w", err)
	}
	t := &Temporal{server: srv, address: address, httpAddress: httpAddress, namespace: cfg.Namespace, dbFile: dbFile, level: level}
	if err := t.waitReady(ctx, logger); err != nil {
		_ = t.Stop()
		return nil, err
	}
	return t, nil
}

// newTemporalServer is temporal.NewServer with panics (serverLogger.Fatal
// included) turned into errors.
func newTemporalServer(opts ...temporalserver.ServerOption) (srv temporalserver.Server, err error) {
	err = recovered(func() error {
		var err error
		srv, err = temporalserver.NewServer(opts...)
		return err
	})
	return srv, err
}

// recovered runs f and returns its error, or the panic it raised as an error.
func recovered(f func() error) (err error) {
	defer func() {
		switch r := recover().(type) {
		case nil:
		case error:
			err = fmt.Errorf("panic: %w", r)
		default:
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return f()
}

// stopLevel is the server's minimum log level: base until Stop begins, then
// above every level.
type stopLevel struct {
	base     slog.Leveler
	stopping atomic.Bool
}

func (l *stopLevel) Level() slog.Level {
	if l.stopping.Load() {
		return slog.LevelError + 100
	}
	return l.base.Level()
}

// synchronousMode checks a Synchronous setting; "" is "full".
func synchronousMode(s string) (string, error) {
	switch s {
	case "":
		return "full", nil
	case "full", "normal":
		return s, nil
	}
	return "", fmt.Errorf("synchronous %q: want full or normal", s)
}

// temporalSQLConfig returns the SQLite store config, creating the file and
// its schema when DataDir is set and the file is new.
func temporalSQLConfig(dataDir, synchronous string) (*config.SQL, string, error) {
	conf := &config.SQL{PluginName: sqliteplugin.PluginName}
	if dataDir == "" {
		// A unique name per server: the plugin shares connections by DSN
		// process-wide, and never closes them.
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, "", fmt.Errorf("temporal in-memory db name: %w", err)
		}
		conf.DatabaseName = "temporal-" + hex.EncodeToString(b[:])
		conf.ConnectAttributes = map[string]string{"mode": "memory", "cache": "shared"}
		return conf, "", nil
	}
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, "", fmt.Errorf("temporal data dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", fmt.Errorf("temporal data dir: %w", err)
	}
	file := filepath.Join(dir, TemporalDBFile)
	conf.DatabaseName = file
	conf.ConnectAttributes = map[string]string{
		"mode": "rwc",
		// WAL; synchronous FULL by default (see TemporalConfig.Synchronous).
		"journal_mode": "wal",
		"synchronous":  synchronous,
	}
	_, err = os.Stat(file)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := sqliteschema.SetupSchema(conf); err != nil {
			_ = os.Remove(file) // do not leave a half-initialised file behind
			return nil, "", fmt.Errorf("temporal setup schema in %s: %w", file, err)
		}
	case err != nil:
		return nil, "", fmt.Errorf("temporal db file: %w", err)
	}
	return conf, file, nil
}

func temporalServerConfig(cfg TemporalConfig, address string, httpPort int, internal []int, sqlConf *config.SQL) *config.Config {
	conf := &config.Config{}
	conf.Global.Membership = config.Membership{MaxJoinDuration: 30 * time.Second, BroadcastAddress: internalBindIP}
	conf.Persistence = config.Persistence{
		DefaultStore:     "sqlite-default",
		VisibilityStore:  "sqlite-default",
		NumHistoryShards: 1,
		DataStores:       map[string]config.DataStore{"sqlite-default": {SQL: sqlConf}},
	}
	conf.ClusterMetadata = &cluster.Config{
		EnableGlobalNamespace:    false,
		FailoverVersionIncrement: 10,
		MasterClusterName:        clusterName,
		CurrentClusterName:       clusterName,
		ClusterInformation: map[string]cluster.ClusterInformation{
			clusterName: {
				Enabled:                true,
				InitialFailoverVersion: 1,
				RPCAddress:             address,
				HTTPAddress:            net.JoinHostPort(dialHost(cfg.Host), strconv.Itoa(httpPort)),
				ClusterID:              primitives.NewUUID().String(), // only used when the file is new
			},
		},
	}
	conf.DCRedirectionPolicy.Policy = "noop"
	service := func(host string, port int) config.Service {
		return config.Service{RPC: config.RPC{GRPCPort: port, BindOnIP: host}}
	}
	frontend := service(cfg.Host, cfg.Port)
	frontend.RPC.HTTPPort = httpPort // HTTP API; without it the server warns that Nexus is off
	conf.Services = map[string]config.Service{
		string(primitives.FrontendService): frontend,
		string(primitives.HistoryService):  service(internalBindIP, internal[0]),
		string(primitives.MatchingService): service(internalBindIP, internal[1]),
		string(primitives.WorkerService):   service(internalBindIP, internal[2]),
	}
	conf.Archival.History.State = "disabled"
	conf.Archival.Visibility.State = "disabled"
	conf.NamespaceDefaults.Archival.History.State = "disabled"
	conf.NamespaceDefaults.Archival.Visibility.State = "disabled"
	conf.PublicClient.HostPort = address
	return conf
}

// waitReady waits until the frontend serves the namespace, then registers
// any search attribute the namespace lacks (a file created by an older
// version, say).
func (t *Temporal) waitReady(ctx context.Context, logger *slog.Logger) error {
	opts := client.Options{
		HostPort:  t.address,
		Namespace: t.namespace,
		Logger:    sdklog.NewStructuredLogger(logger),
	}
	var c client.Client
	err := poll(ctx, startupTimeout, readyPollPeriod, func(ctx context.Context) error {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if c == nil {
			var err error
			if c, err = client.DialContext(rctx, opts); err != nil {
				c = nil
				return err
			}
		}
		_, err := c.WorkflowService().DescribeNamespace(rctx, &workflowservice.DescribeNamespaceRequest{Namespace: t.namespace})
		return err
	})
	if c != nil {
		defer c.Close()
	}
	if err != nil {
		return fmt.Errorf("temporal frontend %s not ready: %w", t.address, err)
	}
	list, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: t.namespace})
	if err != nil {
		return fmt.Errorf("temporal list search attributes: %w", err)
	}
	missing := map[string]enumspb.IndexedValueType{}
	for name, typ := range searchAttributes {
		if _, ok := list.GetCustomAttributes()[name]; !ok {
			missing[name] = typ
		}
	}
	if len(missing) > 0 {
		_, err := c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
			Namespace:        t.namespace,
			SearchAttributes: missing,
		})
		if err != nil {
			return fmt.Errorf("temporal add search attributes: %w", err)
		}
	}
	return nil
}

// Address returns the host:port of the frontend gRPC service.
func (t *Temporal) Address() string { return t.address }

// HTTPAddress returns the host:port of the frontend HTTP API (and Nexus
// endpoints).
func (t *Temporal) HTTPAddress() string { return t.httpAddress }

// Namespace returns the namespace created at start.
func (t *Temporal) Namespace() string { return t.namespace }

// DBFile returns the path of the SQLite file, or "" when in memory.
func (t *Temporal) DBFile() string { return t.dbFile }

// Stop stops all services. It is safe to call more than once.
//
// Server logs are silenced from the start of Stop: shutting services down
// makes the internal workers log poll and dial failures (and the odd error)
// that mean nothing.
//
// Process-wide leftovers (Temporal server v1.32.1 behaviour, harmless for
// dev and tests, but do not start and stop hundreds of servers in one
// process):
//   - the server's SQLite plugin keeps its connection (and, in memory mode,
//     the database) open for the life of the process; a later StartTemporal
//     on the same DataDir in the same process reuses it;
//   - the worker service does not stop its system SDK workers (scanners,
//     parent-close-policy): about 100 goroutines keep retrying, with backoff,
//     to poll the old frontend address. A new server started in the same
//     process on the same fixed Port would get polled by them.
func (t *Temporal) Stop() error {
	t.stopOnce.Do(func() {
		t.level.stopping.Store(true)
		if err := t.server.Stop(); err != nil {
			t.stopErr = fmt.Errorf("temporal stop: %w", err)
		}
	})
	return t.stopErr
}
