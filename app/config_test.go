package app

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnstile/turnstile/workflows"
)

// envOf returns a getenv over vars.
func envOf(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestFromEnvDefaults(t *testing.T) {
	c, err := FromEnv(envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"Env", c.Env, EnvDevelopment},
		{"APIAddr", c.APIAddr, "127.0.0.1:8080"},
		{"TemporalAddress", c.TemporalAddress, "127.0.0.1:7233"},
		{"Namespace", c.Namespace, "default"},
		{"MongoURI", c.MongoURI, "mongodb://127.0.0.1:27017/"},
		{"MongoDatabase", c.MongoDatabase, "turnstile"},
		{"JWTKey length", len(c.JWTKey), 0},
		{"JWTIssuer", c.JWTIssuer, "turnstile"},
		{"JWTAudience", c.JWTAudience, "turnstile-api"},
		{"AccessTTL", c.AccessTTL, 15 * time.Minute},
		{"RefreshTTL", c.RefreshTTL, 720 * time.Hour},
		{"HTTPAllowlist size", len(c.HTTPAllowlist), 0},
		{"HTTPTimeout", c.HTTPTimeout, 30 * time.Second},
		{"MaxBodyBytes", c.MaxBodyBytes, int64(262144)},
		{"MaxQueue", c.MaxQueue, 1000},
		{"MaxBatch", c.MaxBatch, 100},
		{"TrustedProxies size", len(c.TrustedProxies), 0},
		{"Session.IdleTimeout", c.Session.IdleTimeout, workflows.DefaultIdleTimeout},
		{"Session.MaxAttempts", c.Session.MaxAttempts, int32(workflows.DefaultMaxAttempts)},
		{"Session.ExecTimeout", c.Session.ExecTimeout, workflows.DefaultExecTimeout},
		{"Session.RetryInitial", c.Session.RetryInitial, workflows.DefaultRetryInitial},
		{"Session.RetryMax", c.Session.RetryMax, workflows.DefaultRetryMax},
		{"LogLevel", c.LogLevel, slog.LevelInfo},
		{"DataDir", c.DataDir, ".data"},
		{"StartupTimeout", c.StartupTimeout, time.Minute},
		{"MaxJSONDepth", c.MaxJSONDepth, 32},
		{"MaxPayloadBytes", c.MaxPayloadBytes, 65536},
		{"MaxPageSize", c.MaxPageSize, 100},
		{"SubmitRate", c.SubmitRate, 50},
		{"SubmitBurst", c.SubmitBurst, 100},
		{"AuthRate", c.AuthRate, DevAuthRate},
		{"AuthBurst", c.AuthBurst, DevAuthBurst},
		{"LoginLockoutThreshold", c.LoginLockoutThreshold, 5},
		{"LoginLockoutBase", c.LoginLockoutBase, 30 * time.Second},
		{"LoginLockoutMax", c.LoginLockoutMax, 15 * time.Minute},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestFromEnvReadsValues(t *testing.T) {
	c, err := FromEnv(envOf(map[string]string{
		"TURNSTILE_ENV":                "production",
		"TURNSTILE_API_ADDR":           " 0.0.0.0:9000 ", // trimmed
		"TURNSTILE_TEMPORAL_NAMESPACE": "prod",
		"TURNSTILE_JWT_KEY":            "0123456789abcdef0123456789abcdef",
		"TURNSTILE_ACCESS_TOKEN_TTL":   "5m",
		"TURNSTILE_HTTP_ALLOWLIST":     "api.example.com:443, 127.0.0.1:9999",
		"TURNSTILE_MAX_QUEUE":          " 50 ",
		"TURNSTILE_MAX_ATTEMPTS":       "7",
		"TURNSTILE_RETRY_MAX":          "2m",
		"TURNSTILE_TRUSTED_PROXIES":    "10.0.0.0/8, 192.168.1.1 ,",
		"TURNSTILE_LOG_LEVEL":          "WARN",
		"TURNSTILE_MAX_BODY_BYTES":     "   ", // blank means default
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Env != EnvProduction || c.APIAddr != "0.0.0.0:9000" || c.Namespace != "prod" {
		t.Errorf("Env %q APIAddr %q Namespace %q", c.Env, c.APIAddr, c.Namespace)
	}
	if c.AccessTTL != 5*time.Minute || c.Session.RetryMax != 2*time.Minute {
		t.Errorf("AccessTTL %v RetryMax %v", c.AccessTTL, c.Session.RetryMax)
	}
	if c.MaxQueue != 50 || c.Session.MaxAttempts != 7 || c.MaxBodyBytes != 262144 {
		t.Errorf("MaxQueue %d MaxAttempts %d MaxBodyBytes %d", c.MaxQueue, c.Session.MaxAttempts, c.MaxBodyBytes)
	}
	if len(c.HTTPAllowlist) != 2 || !c.HTTPAllowlist["api.example.com:443"] || !c.HTTPAllowlist["127.0.0.1:9999"] {
		t.Errorf("HTTPAllowlist = %v", c.HTTPAllowlist)
	}
	if strings.Join(c.TrustedProxies, "|") != "10.0.0.0/8|192.168.1.1" {
		t.Errorf("TrustedProxies = %q", c.TrustedProxies)
	}
	if c.LogLevel != slog.LevelWarn {
		t.Errorf("LogLevel = %v, want WARN", c.LogLevel)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestFromEnvMalformedValuesNameTheVariable(t *testing.T) {
	for _, tc := range []struct{ key, value string }{
		{"TURNSTILE_ACCESS_TOKEN_TTL", "fifteen minutes"},
		{"TURNSTILE_ACCESS_TOKEN_TTL", "15"}, // no unit
		{"TURNSTILE_REFRESH_TOKEN_TTL", "0s"},
		{"TURNSTILE_HTTP_TIMEOUT", "-5s"},
		{"TURNSTILE_STARTUP_TIMEOUT", "soon"},
		{"TURNSTILE_IDLE_TIMEOUT", "0"},
		{"TURNSTILE_EXEC_TIMEOUT", "-1m"},
		{"TURNSTILE_RETRY_INITIAL", "1 s"},
		{"TURNSTILE_RETRY_MAX", "x"},
		{"TURNSTILE_MAX_BODY_BYTES", "256KiB"},
		{"TURNSTILE_MAX_QUEUE", "0"},
		{"TURNSTILE_MAX_QUEUE", "-3"},
		{"TURNSTILE_MAX_BATCH", "1.5"},
		{"TURNSTILE_MAX_ATTEMPTS", "many"},
		{"TURNSTILE_MAX_ATTEMPTS", "0"},
		{"TURNSTILE_LOG_LEVEL", "verbose"},
		{"TURNSTILE_ENV", "staging"},
		{"TURNSTILE_ENV", "Production"},
		{"TURNSTILE_HTTP_ALLOWLIST", "example.com"},
		{"TURNSTILE_HTTP_ALLOWLIST", "127.0.0.1:80,:443"},
		{"TURNSTILE_MAX_JSON_DEPTH", "0"},
		{"TURNSTILE_MAX_PAYLOAD_BYTES", "64k"},
		{"TURNSTILE_MAX_PAGE_SIZE", "1001"}, // over store.MaxListLimit
		{"TURNSTILE_MAX_PAGE_SIZE", "-1"},
		{"TURNSTILE_SUBMIT_RATE", "0.5"},
		{"TURNSTILE_SUBMIT_BURST", "0"},
		{"TURNSTILE_AUTH_RATE", "fast"},
		{"TURNSTILE_AUTH_BURST", "-2"},
		{"TURNSTILE_LOGIN_LOCKOUT_THRESHOLD", "0"},
		{"TURNSTILE_LOGIN_LOCKOUT_BASE", "30"},
		{"TURNSTILE_LOGIN_LOCKOUT_MAX", "-1m"},
		{"TURNSTILE_LOGIN_LOCKOUT_BASE", "1h"}, // longer than the 15m max
	} {
		_, err := FromEnv(envOf(map[string]string{tc.key: tc.value}))
		if err == nil {
			t.Errorf("%s=%q accepted, want an error", tc.key, tc.value)
			continue
		}
		if !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s=%q: error %q does not name the variable", tc.key, tc.value, err)
		}
	}
}

// TURNSTILE_MAX_ATTEMPTS is parsed as an int and then converted to int32, so
// a value past MaxInt32 wraps: 4294967297 becomes 1 attempt, 3000000000 a
// negative count that WithDefaults silently turns into 5.
func TestFromEnvMaxAttemptsOutOfRange(t *testing.T) {
	for _, v := range []string{"3000000000", "4294967297"} {
		c, err := FromEnv(envOf(map[string]string{"TURNSTILE_MAX_ATTEMPTS": v}))
		if err == nil {
			t.Errorf("TURNSTILE_MAX_ATTEMPTS=%s accepted as MaxAttempts %d, want an error", v, c.Session.MaxAttempts)
		} else if !strings.Contains(err.Error(), "TURNSTILE_MAX_ATTEMPTS") {
			t.Errorf("TURNSTILE_MAX_ATTEMPTS=%s: error %q does not name the variable", v, err)
		}
	}
}

func TestFromEnvReportsEveryMalformedValue(t *testing.T) {
	_, err := FromEnv(envOf(map[string]string{
		"TURNSTILE_HTTP_TIMEOUT": "bad",
		"TURNSTILE_MAX_QUEUE":    "0",
		"TURNSTILE_ENV":          "qa",
	}))
	if err == nil {
		t.Fatal("no error")
	}
	for _, key := range []string{"TURNSTILE_HTTP_TIMEOUT", "TURNSTILE_MAX_QUEUE", "TURNSTILE_ENV"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error %q does not mention %s", err, key)
		}
	}
}

func TestValidate(t *testing.T) {
	key32 := []byte(strings.Repeat("k", 32))
	key31 := key32[:31]
	for _, tc := range []struct {
		name string
		env  string
		key  []byte
		ok   bool
	}{
		{"development without key", EnvDevelopment, nil, true},
		{"production without key", EnvProduction, nil, false},
		{"development 31-byte key", EnvDevelopment, key31, false},
		{"production 31-byte key", EnvProduction, key31, false},
		{"development 32-byte key", EnvDevelopment, key32, true},
		{"production 32-byte key", EnvProduction, key32, true},
	} {
		err := Config{Env: tc.env, JWTKey: tc.key}.Validate()
		if tc.ok && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !tc.ok {
			if err == nil {
				t.Errorf("%s: accepted", tc.name)
			} else if !strings.Contains(err.Error(), "TURNSTILE_JWT_KEY") {
				t.Errorf("%s: error %q does not name TURNSTILE_JWT_KEY", tc.name, err)
			}
		}
	}
}

func TestEnsureJWTKeyGeneratesAndReusesDevelopmentKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data") // EnsureJWTKey creates it
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	first := Config{Env: EnvDevelopment, DataDir: dir}
	if err := first.EnsureJWTKey(log); err != nil {
		t.Fatal(err)
	}
	if len(first.JWTKey) < 32 {
		t.Fatalf("generated key has %d bytes, want at least 32", len(first.JWTKey))
	}
	if err := first.Validate(); err != nil {
		t.Errorf("generated key does not validate: %v", err)
	}
	path := filepath.Join(dir, "jwt.key")
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("%s has mode %o, want 600", path, perm)
	}
	onDisk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, first.JWTKey) {
		t.Error("key on disk differs from the key in Config")
	}
	if !strings.Contains(logs.String(), "generated") {
		t.Errorf("no warning logged about the generated key: %q", logs.String())
	}

	second := Config{Env: EnvDevelopment, DataDir: dir}
	if err := second.EnsureJWTKey(log); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(second.JWTKey, first.JWTKey) {
		t.Error("a second start generated a new key instead of reading the saved one")
	}

	other := Config{Env: EnvDevelopment, DataDir: t.TempDir()}
	if err := other.EnsureJWTKey(log); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other.JWTKey, first.JWTKey) {
		t.Error("two data dirs got the same key")
	}
}

func TestEnsureJWTKeyKeepsConfiguredKey(t *testing.T) {
	dir := t.TempDir()
	key := []byte(strings.Repeat("s", 40))
	c := Config{Env: EnvDevelopment, DataDir: dir, JWTKey: key}
	if err := c.EnsureJWTKey(slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.JWTKey, key) {
		t.Error("configured key replaced")
	}
	if _, err := os.Stat(filepath.Join(dir, "jwt.key")); !os.IsNotExist(err) {
		t.Errorf("jwt.key written although a key was configured (stat err %v)", err)
	}
}

func TestEnsureJWTKeyReplacesShortSavedKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "jwt.key")
	if err := os.WriteFile(path, []byte("too-short"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := Config{Env: EnvDevelopment, DataDir: dir}
	if err := c.EnsureJWTKey(slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if len(c.JWTKey) < 32 || string(c.JWTKey) == "too-short" {
		t.Errorf("key = %q, want a fresh key of at least 32 bytes", c.JWTKey)
	}
}

func TestEnsureJWTKeyNeverGeneratesInProduction(t *testing.T) {
	dir := t.TempDir()
	c := Config{Env: EnvProduction, DataDir: dir}
	if err := c.EnsureJWTKey(slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if len(c.JWTKey) != 0 {
		t.Errorf("production got a generated key (%d bytes)", len(c.JWTKey))
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("production wrote %d files into the data dir", len(entries))
	}
	if err := c.Validate(); err == nil {
		t.Error("production without a key validates after EnsureJWTKey")
	}
}

func TestFromEnvReadsSecurityLimits(t *testing.T) {
	c, err := FromEnv(envOf(map[string]string{
		"TURNSTILE_MAX_JSON_DEPTH":          "8",
		"TURNSTILE_MAX_PAYLOAD_BYTES":       "1024",
		"TURNSTILE_MAX_PAGE_SIZE":           "1000",
		"TURNSTILE_SUBMIT_RATE":             "3",
		"TURNSTILE_SUBMIT_BURST":            "9",
		"TURNSTILE_AUTH_RATE":               "10",
		"TURNSTILE_AUTH_BURST":              "20",
		"TURNSTILE_LOGIN_LOCKOUT_THRESHOLD": "4",
		"TURNSTILE_LOGIN_LOCKOUT_BASE":      "2s",
		"TURNSTILE_LOGIN_LOCKOUT_MAX":       "1h",
	}))
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.MaxJSONDepth, c.MaxPayloadBytes, c.MaxPageSize, c.SubmitRate, c.SubmitBurst, c.AuthRate, c.AuthBurst,
		c.LoginLockoutThreshold, c.LoginLockoutBase, c.LoginLockoutMax}
	want := []any{8, 1024, 1000, 3, 9, 10, 20, 4, 2 * time.Second, time.Hour}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("field %d = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestFromEnvLocalTypes(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want []string
	}{
		{"", []string{"echo"}},
		{"none", nil},
		{"echo, http ,", []string{"echo", "http"}},
	} {
		cfg, err := FromEnv(func(k string) string {
			if k == "TURNSTILE_LOCAL_TYPES" {
				return tc.env
			}
			return ""
		})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(cfg.Session.LocalTypes) != fmt.Sprint(tc.want) {
			t.Errorf("TURNSTILE_LOCAL_TYPES=%q: %v, want %v", tc.env, cfg.Session.LocalTypes, tc.want)
		}
	}
}

func TestFromEnvAuthLimitsStrictInProduction(t *testing.T) {
	c, err := FromEnv(envOf(map[string]string{"TURNSTILE_ENV": "production"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.AuthRate != 60 || c.AuthBurst != 120 {
		t.Fatalf("production auth limit %d/min, burst %d; want 60, 120", c.AuthRate, c.AuthBurst)
	}
}

// TURNSTILE_MAX_QUEUE bounds what a session carries across continue-as-new
// (every waiting request's entry), whose input must stay under Temporal's
// 2 MB payload limit: values past MaxQueueLimit are refused (issue 12.5).
func TestFromEnvMaxQueueBounded(t *testing.T) {
	for v, ok := range map[string]bool{"5000": true, "5001": false, "1000000": false, "0": false} {
		_, err := FromEnv(envOf(map[string]string{"TURNSTILE_MAX_QUEUE": v}))
		if ok && err != nil {
			t.Errorf("TURNSTILE_MAX_QUEUE=%s: %v", v, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "TURNSTILE_MAX_QUEUE")) {
			t.Errorf("TURNSTILE_MAX_QUEUE=%s: error %v, want one naming the variable", v, err)
		}
	}
}
