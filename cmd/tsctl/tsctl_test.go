package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestWithFakeAPI_LoginSavesTokenFile0600AndSendsStdinPassword(t *testing.T) {
	e := newEnv(t)
	code, out, errOut := e.run(fakePassword+"\n", "login", "--api", e.url, "--email", fakeEmail)
	if code != exitOK {
		t.Fatalf("login exit %d, stderr %q", code, errOut)
	}
	if !strings.Contains(out, "Logged in to "+e.url+" as "+fakeEmail) {
		t.Errorf("stdout %q", out)
	}
	if got, _, _ := e.api.counters(); len(got) != 1 || got[0]["email"] != fakeEmail || got[0]["password"] != fakePassword {
		t.Fatalf("the API received logins %v, want one with the password from stdin", got)
	}
	fi, err := os.Stat(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	cfg := e.savedConfig()
	want := config{API: e.url, Email: fakeEmail, AccessToken: "access-1", RefreshToken: "refresh-1"}
	if cfg != want {
		t.Errorf("saved %+v, want %+v", cfg, want)
	}
	if strings.Contains(out+errOut, "access-1") {
		t.Error("a token was printed")
	}

	// The saved URL and token carry the next command without flags.
	if code, _, errOut := e.run("", "stats"); code != exitOK {
		t.Fatalf("stats after login: exit %d, %s", code, errOut)
	}
	calls := e.api.recorded()
	if last := calls[len(calls)-1]; last.Auth != "Bearer access-1" {
		t.Errorf("stats sent Authorization %q", last.Auth)
	}
}

func TestWithFakeAPI_LoginPasswordFromEnvAndSavedEmail(t *testing.T) {
	e := newEnv(t)
	e.vars["TSCTL_PASSWORD"] = fakePassword
	e.vars["TSCTL_API"] = e.url + "/"
	if code, _, errOut := e.run("", "login", "--email", fakeEmail); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if cfg := e.savedConfig(); cfg.API != e.url {
		t.Errorf("saved API %q, want %q (trailing slash dropped)", cfg.API, e.url)
	}
	// Logging in again needs no --email: the saved one is used.
	if code, _, errOut := e.run("", "login"); code != exitOK {
		t.Fatalf("second login exit %d: %s", code, errOut)
	}
	if logins, _, _ := e.api.counters(); len(logins) != 2 {
		t.Fatalf("%d logins", len(logins))
	}
}

func TestWithFakeAPI_LoginWrongPasswordExits3(t *testing.T) {
	e := newEnv(t)
	code, _, errOut := e.run("wrong\n", "login", "--api", e.url, "--email", fakeEmail)
	if code != exitAuth || errOut != "tsctl: email or password is wrong\n" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if _, err := os.Stat(e.cfgPath); err == nil {
		t.Error("a failed login wrote the config file")
	}
}

func TestWithFakeAPI_PasswordIsNeverAFlag(t *testing.T) {
	for _, args := range [][]string{
		{"login", "--email", fakeEmail, "--password", fakePassword},
		{"login", "--email", fakeEmail, "--password=" + fakePassword},
		{"login", "-p", fakePassword, "--email", fakeEmail},
		{"--password", fakePassword, "login", "--email", fakeEmail},
	} {
		e := newEnv(t)
		args = append(args, "--api", e.url)
		code, out, errOut := e.run("", args...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
		if strings.Contains(out+errOut, fakePassword) {
			t.Errorf("%q: the password was echoed: %q", args, out+errOut)
		}
		if calls := e.api.recorded(); len(calls) != 0 {
			t.Errorf("%q: sent %v", args, calls)
		}
	}
	e := newEnv(t)
	_, _, errOut := e.run("", "login", "--email", fakeEmail, "--password", "x")
	if !strings.Contains(errOut, "standard input") || !strings.Contains(errOut, "TSCTL_PASSWORD") {
		t.Errorf("the refusal does not say how to pass it: %q", errOut)
	}
}

func TestWithFakeAPI_LoginWithoutPasswordIsUsageError(t *testing.T) {
	e := newEnv(t)
	code, _, errOut := e.run("", "login", "--api", e.url, "--email", fakeEmail)
	if code != exitUsage || !strings.Contains(errOut, "no password") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestWithFakeAPI_SendsBearerToken(t *testing.T) {
	e := newEnv(t).admin()
	if code, _, errOut := e.run("", "sessions", "show", "u-ada"); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	calls := e.api.recorded()
	if len(calls) != 1 {
		t.Fatalf("calls %v", calls)
	}
	if c := calls[0]; c.Method != "GET" || c.Path != "/v1/admin/sessions/u-ada" || c.Auth != "Bearer admin-access" {
		t.Errorf("call %+v", c)
	}
}

func TestWithFakeAPI_401RefreshesOnceRetriesAndSavesNewPair(t *testing.T) {
	e := newEnv(t)
	e.loggedInAs("expired-access", "", "")
	e.api.grant("", "live-refresh", "admin")
	cfg := e.savedConfig()
	cfg.RefreshToken = "live-refresh"
	if err := saveConfig(e.cfgPath, cfg); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := e.run("", "stats")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "1234 succeeded") {
		t.Errorf("stdout %q", out)
	}
	var paths []string
	for _, c := range e.api.recorded() {
		paths = append(paths, c.Method+" "+c.Path+" "+c.Auth)
	}
	want := []string{
		"GET /v1/admin/stats Bearer expired-access",
		"POST /v1/auth/refresh ",
		"GET /v1/admin/stats Bearer access-1",
	}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("calls\n%q\nwant\n%q", paths, want)
	}
	if calls := e.api.recorded(); calls[1].Body != `{"refresh_token":"live-refresh"}` {
		t.Errorf("refresh body %q", calls[1].Body)
	}
	saved := e.savedConfig()
	if saved.AccessToken != "access-1" || saved.RefreshToken != "refresh-1" || saved.API != e.url || saved.Email != fakeEmail {
		t.Errorf("saved %+v, want the new pair", saved)
	}
	if fi, err := os.Stat(e.cfgPath); err == nil && runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("mode after refresh %v", fi.Mode().Perm())
	}

	// The new pair is used from the start next time: no second refresh.
	code, _, _ = e.run("", "stats")
	if _, refreshes, _ := e.api.counters(); code != exitOK || refreshes != 1 {
		t.Errorf("second stats exit %d, refreshes %d", code, refreshes)
	}
}

func TestWithFakeAPI_401RefreshIsTriedOnlyOnce(t *testing.T) {
	e := newEnv(t)
	// The refresh succeeds but its new access token is a user's, who is then
	// refused: tsctl must not loop.
	e.loggedInAs("expired-access", "", "")
	e.api.grant("", "user-refresh", "user")
	cfg := e.savedConfig()
	cfg.RefreshToken = "user-refresh"
	_ = saveConfig(e.cfgPath, cfg)
	code, _, errOut := e.run("", "stats")
	if code != exitAuth {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if _, refreshes, _ := e.api.counters(); len(e.api.recorded()) != 3 || refreshes != 1 {
		t.Errorf("%d calls, %d refreshes; want 3 and 1", len(e.api.recorded()), refreshes)
	}

	// A dead refresh token: one refresh try, then exit 3 asking for a login.
	e = newEnv(t)
	e.loggedInAs("expired-access", "dead-refresh", "")
	code, _, errOut = e.run("", "sessions", "list")
	if code != exitAuth || !strings.Contains(errOut, "tsctl login") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if _, refreshes, _ := e.api.counters(); refreshes != 1 || len(e.api.recorded()) != 2 {
		t.Errorf("%d refreshes, calls %v", refreshes, e.api.recorded())
	}
}

// TestWithFakeAPI_RefreshUsesPairSavedByAnotherRun covers two tsctl runs that
// hit 401 together: the second must not spend the already spent refresh token.
func TestWithFakeAPI_RefreshUsesPairSavedByAnotherRun(t *testing.T) {
	e := newEnv(t)
	e.loggedInAs("expired-access", "spent-refresh", "")
	e.api.grant("fresh-access", "fresh-refresh", "admin")
	c := &cli{stdout: new(strings.Builder), stderr: new(strings.Builder), getenv: func(k string) string { return e.vars[k] }, now: time.Now}
	cl, err := c.loggedIn()
	if err != nil {
		t.Fatal(err)
	}
	// Meanwhile another run refreshed and saved its pair.
	_ = saveConfig(e.cfgPath, config{API: e.url, Email: fakeEmail, AccessToken: "fresh-access", RefreshToken: "fresh-refresh"})
	if _, err := cl.get(t.Context(), "/v1/admin/stats", nil); err != nil {
		t.Fatal(err)
	}
	if _, refreshes, _ := e.api.counters(); refreshes != 0 {
		t.Errorf("%d refreshes; the saved pair should have been used", refreshes)
	}
}

func TestWithFakeAPI_JSONOutputEqualsServer(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--json", "sessions", "list"}, sessionsPage1},
		{[]string{"sessions", "list", "--cursor", "c2", "--json"}, sessionsPage2},
		{[]string{"sessions", "show", "--json", "u-ada"}, sessionAda},
		{[]string{"requests", "show", "r-failed", "--json"}, requestFailed},
		{[]string{"users", "list", "--json=true"}, usersPage},
		{[]string{"stats", "--json"}, statsBody},
	}
	for _, tc := range cases {
		e := newEnv(t).admin()
		code, out, errOut := e.run("", tc.args...)
		if code != exitOK {
			t.Fatalf("%q: exit %d: %s", tc.args, code, errOut)
		}
		if !json.Valid([]byte(out)) {
			t.Fatalf("%q: not JSON: %q", tc.args, out)
		}
		if !sameJSON(t, out, tc.want) {
			t.Errorf("%q printed\n%s\nwant the server's\n%s", tc.args, out, tc.want)
		}
		if !strings.Contains(out, "\n  ") {
			t.Errorf("%q: not indented: %q", tc.args, out)
		}
	}
}

func TestWithFakeAPI_AllPagesFollowsCursors(t *testing.T) {
	e := newEnv(t).admin()
	code, out, errOut := e.run("", "sessions", "list", "--all-pages", "--limit", "2", "--json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got struct {
		Sessions   []map[string]any `json:"sessions"`
		NextCursor *string          `json:"next_cursor"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Sessions) != 3 || got.NextCursor != nil || got.Sessions[2]["user_id"] != "u-cy" {
		t.Errorf("merged pages %+v", got)
	}
	var queries []string
	for _, c := range e.api.recorded() {
		queries = append(queries, c.Query)
	}
	want := []string{"limit=2&state=open", "cursor=c2&limit=2&state=open"}
	if !reflect.DeepEqual(queries, want) {
		t.Errorf("queries %q, want %q", queries, want)
	}

	// Tables: all rows, no "next page" hint.
	_, out, _ = e.run("", "sessions", "list", "--all-pages")
	if !strings.Contains(out, "u-cy") || strings.Contains(out, "--cursor") {
		t.Errorf("table %q", out)
	}
}

func TestWithFakeAPI_SessionsListTable(t *testing.T) {
	e := newEnv(t).admin()
	code, out, errOut := e.run("", "sessions", "list", "--paused=false")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(out, "\n")
	if !regexp.MustCompile(`^USER ID\s+EMAIL\s+STATUS\s+QUEUE\s+PAUSED\s+STARTED$`).MatchString(lines[0]) {
		t.Errorf("header %q", lines[0])
	}
	if !regexp.MustCompile(`^u-ada\s+ada@example\.com\s+Running\s+2\s+no\s+\S+ ago$`).MatchString(lines[1]) {
		t.Errorf("row %q", lines[1])
	}
	if !regexp.MustCompile(`^u-bob\s+bob@example\.com\s+Running\s+7\s+yes\s+\S+ ago$`).MatchString(lines[2]) {
		t.Errorf("row %q", lines[2])
	}
	// Columns line up: EMAIL starts at the same offset on every line.
	if a, b := strings.Index(lines[0], "EMAIL"), strings.Index(lines[1], "ada@"); a != b {
		t.Errorf("EMAIL at %d, ada@ at %d", a, b)
	}
	if !strings.Contains(out, "tsctl sessions list --cursor c2") {
		t.Errorf("no hint for the next page: %q", out)
	}
	if q := e.api.recorded()[0].Query; q != "paused=false&state=open" {
		t.Errorf("query %q", q)
	}

	_, out, _ = e.run("", "sessions", "list", "--state", "closed", "--paused")
	if out != "No paused closed sessions.\n" {
		t.Errorf("empty list said %q", out)
	}
}

func TestWithFakeAPI_SessionsShowTable(t *testing.T) {
	e := newEnv(t).admin()
	code, out, errOut := e.run("", "sessions", "show", "u-ada")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		`(?m)^User:\s+u-ada$`, `(?m)^Email:\s+ada@example\.com$`, `(?m)^State:\s+open$`, `(?m)^Paused:\s+no$`,
		`(?m)^Policy:\s+continue \(`, `(?m)^Processed:\s+41$`, `(?m)^Failed:\s+3$`,
		`(?m)^Running:\s+r-run\s+http\s+started 2026-05-01 \d\d:\d\d:30 \(`,
		`(?m)^Queue: 2 waiting:$`, `(?m)^POSITION\s+REQUEST ID\s+TYPE\s+ENQUEUED\s+ESTIMATED START$`,
		`(?m)^1\s+r-q1\s+echo\s+2026-05-01 .*\)\s+-$`, `(?m)^2\s+r-q2\s+sleep\s+2026-05-01 .*\)\s+at 2030-01-01 `,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("no %s in\n%s", want, out)
		}
	}

	_, out, _ = e.run("", "sessions", "show", "u-idle")
	if !strings.Contains(out, "The queue is empty.") || !regexp.MustCompile(`(?m)^Running:\s+nothing$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^Policy:\s+pause \(`).MatchString(out) {
		t.Errorf("idle session:\n%s", out)
	}
}

func TestWithFakeAPI_SteeringCommandsCallTheirRoutes(t *testing.T) {
	cases := []struct {
		args           []string
		method, path   string
		body, stdoutRe string
	}{
		{[]string{"sessions", "pause", "u-ada"}, "POST", "/v1/admin/sessions/u-ada/pause", "", `(?m)^Paused: .*\n[\s\S]*^Paused:\s+yes`},
		{[]string{"sessions", "resume", "u-ada"}, "POST", "/v1/admin/sessions/u-ada/resume", "", `^Resumed`},
		{[]string{"sessions", "close", "u-ada"}, "POST", "/v1/admin/sessions/u-ada/close", "", `^Closing`},
		{[]string{"sessions", "policy", "u-ada", "pause"}, "PUT", "/v1/admin/sessions/u-ada/policy", `{"policy":"pause"}`, `(?m)^Policy:\s+pause`},
		{[]string{"requests", "cancel", "r-q1"}, "POST", "/v1/admin/requests/r-q1/cancel", "", `(?m)^Status:\s+cancelled$`},
		{[]string{"requests", "requeue", "r-failed"}, "POST", "/v1/admin/requests/r-failed/requeue", "", `(?m)^Status:\s+queued \(position 3 in the queue\)$`},
		{[]string{"requests", "show", "r-failed"}, "GET", "/v1/admin/requests/r-failed", "", `(?m)^Error:\s+503 from svc:80$[\s\S]*`},
		{[]string{"users", "disable", "u-ada"}, "POST", "/v1/admin/users/u-ada/disable", "", `is now disabled\.`},
		{[]string{"users", "enable", "u-ada"}, "POST", "/v1/admin/users/u-ada/enable", "", `is now active\.`},
		{[]string{"sessions", "show", "a/b c"}, "GET", "/v1/admin/sessions/a/b c", "", ``},
	}
	for _, tc := range cases {
		e := newEnv(t).admin()
		code, out, errOut := e.run("", tc.args...)
		calls := e.api.recorded()
		if len(calls) != 1 {
			t.Fatalf("%q: calls %v", tc.args, calls)
		}
		c := calls[0]
		if c.Method != tc.method || c.Path != tc.path || c.Body != tc.body || c.Auth != "Bearer admin-access" {
			t.Errorf("%q sent %+v", tc.args, c)
		}
		if tc.stdoutRe != "" && (code != exitOK || !regexp.MustCompile(tc.stdoutRe).MatchString(out)) {
			t.Errorf("%q: exit %d, stderr %q, stdout\n%s", tc.args, code, errOut, out)
		}
	}
}

func TestWithFakeAPI_UsersAndStatsTables(t *testing.T) {
	e := newEnv(t).admin()
	_, out, _ := e.run("", "users", "list")
	for _, want := range []string{
		`(?m)^ID\s+EMAIL\s+ROLE\s+STATUS\s+CREATED$`,
		`(?m)^u-ada\s+ada@example\.com\s+user\s+active\s+2026-04-01 `,
		`(?m)^u-root\s+admin@example\.com\s+admin\s+active\s+2026-03-01 `,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("no %s in\n%s", want, out)
		}
	}
	_, out, _ = e.run("", "stats")
	for _, want := range []string{`(?m)^Users:\s+12$`, `(?m)^Sessions:\s+4 open\s+1 paused`, `(?m)^Requests:\s+3 queued\s+1 running\s+1234 succeeded\s+7 failed\s+2 cancelled`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("no %s in\n%s", want, out)
		}
	}
	_, out, _ = e.run("", "requests", "show", "r-q1")
	for _, want := range []string{`(?m)^Status:\s+queued \(position 1 in the queue\)$`, `(?m)^Payload:\s+\{"hello":"world"\}$`, `(?m)^Result:\s+-$`, `(?m)^Started:\s+-$`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("no %s in\n%s", want, out)
		}
	}
}

func TestWithFakeAPI_ExitCodes(t *testing.T) {
	cases := []struct {
		name   string
		login  string // "admin", "user", "expired" (no refresh token) or "" (none)
		args   []string
		code   int
		stderr string // a substring
	}{
		{"unknown command", "admin", []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"unknown subcommand", "admin", []string{"sessions", "frobnicate"}, exitUsage, `unknown command "sessions frobnicate"`},
		{"group without command", "admin", []string{"users"}, exitUsage, "no command given"},
		{"bad flag", "admin", []string{"sessions", "list", "--bogus"}, exitUsage, "flag provided but not defined"},
		{"bad state", "admin", []string{"sessions", "list", "--state", "half"}, exitUsage, "--state must be"},
		{"bad limit", "admin", []string{"users", "list", "--limit", "-1"}, exitUsage, "--limit"},
		{"missing argument", "admin", []string{"sessions", "show"}, exitUsage, "USER_ID is required"},
		{"extra argument", "admin", []string{"requests", "show", "r-1", "r-2"}, exitUsage, `unexpected argument "r-2"`},
		{"bad policy", "admin", []string{"sessions", "policy", "u-ada", "retry"}, exitUsage, "continue or pause"},
		{"bad api url", "admin", []string{"--api", "ftp://x", "stats"}, exitUsage, "not an http"},
		{"api flag without value", "admin", []string{"stats", "--api"}, exitUsage, "--api needs a URL"},
		{"not logged in", "", []string{"stats"}, exitAuth, "not logged in"},
		{"401 without refresh token", "expired", []string{"stats"}, exitAuth, "invalid or expired access token"},
		{"403 for a non-admin", "user", []string{"sessions", "list"}, exitAuth, "needs the admin role"},
		{"404 session", "admin", []string{"sessions", "show", "u-nobody"}, exitNotFound, "no such user"},
		{"404 request", "admin", []string{"requests", "cancel", "r-nope"}, exitNotFound, "no such request"},
		{"409 pause", "admin", []string{"sessions", "pause", "u-idle"}, exitConflict, "no running session"},
		{"409 cancel", "admin", []string{"requests", "cancel", "r-failed"}, exitConflict, "not queued"},
		{"409 requeue", "admin", []string{"requests", "requeue", "r-q1"}, exitConflict, "only a failed or cancelled"},
		{"500", "admin", []string{"requests", "show", "r-boom"}, exitError, "internal error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			switch tc.login {
			case "admin":
				e.admin()
			case "user":
				e.loggedInAs("user-access", "user-refresh", "user")
			case "expired":
				e.loggedInAs("expired-access", "", "")
			}
			code, out, errOut := e.run("", tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tc.code, errOut)
			}
			if !regexp.MustCompile(`(?m)^tsctl: .*` + regexp.QuoteMeta(tc.stderr)).MatchString(errOut) {
				t.Errorf("stderr %q, want tsctl: ...%s", errOut, tc.stderr)
			}
			if out != "" && tc.code != exitUsage {
				t.Errorf("stdout %q on error", out)
			}
			if tc.code == exitUsage && len(e.api.recorded()) != 0 {
				t.Errorf("a usage error sent %v", e.api.recorded())
			}
		})
	}
}

func TestWithFakeAPI_NetworkErrorExits1(t *testing.T) {
	e := newEnv(t).admin()
	cfg := e.savedConfig()
	cfg.API = "http://127.0.0.1:1" // nothing listens on port 1
	_ = saveConfig(e.cfgPath, cfg)
	code, _, errOut := e.run("", "stats")
	if code != exitError || !strings.Contains(errOut, "cannot reach the Turnstile API at http://127.0.0.1:1") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestWithFakeAPI_TokensGoOnlyToTheirAPI(t *testing.T) {
	e := newEnv(t).admin()
	other := newEnv(t)
	code, _, errOut := e.run("", "--api", other.url, "stats")
	if code != exitAuth || !strings.Contains(errOut, "the saved login is for "+e.url) {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if calls := other.api.recorded(); len(calls) != 0 {
		t.Errorf("the other API got %v", calls)
	}
}

func TestWithFakeAPI_LogoutRevokesAndForgetsTokens(t *testing.T) {
	e := newEnv(t).admin()
	code, out, errOut := e.run("", "logout")
	if code != exitOK || !strings.Contains(out, "Logged out") {
		t.Fatalf("exit %d, out %q, err %q", code, out, errOut)
	}
	if _, _, logouts := e.api.counters(); logouts != 1 {
		t.Errorf("%d logout calls", logouts)
	}
	cfg := e.savedConfig()
	if cfg.AccessToken != "" || cfg.RefreshToken != "" || cfg.API != e.url || cfg.Email != fakeEmail {
		t.Errorf("after logout %+v", cfg)
	}
	if code, _, _ := e.run("", "stats"); code != exitAuth {
		t.Errorf("stats after logout: exit %d", code)
	}
	if code, out, _ := e.run("", "logout"); code != exitOK || !strings.Contains(out, "Not logged in") {
		t.Errorf("second logout: exit %d, %q", code, out)
	}
}

func TestHelpExits0AndTeaches(t *testing.T) {
	e := newEnv(t)
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		code, out, _ := e.run("", args...)
		if code != exitOK {
			t.Errorf("%q: exit %d", args, code)
		}
		for _, want := range []string{"login", "logout", "sessions list", "sessions show", "sessions pause", "sessions resume",
			"sessions close", "sessions policy", "requests show", "requests cancel", "requests requeue", "users list",
			"users disable", "users enable", "stats", "--json", "--api", "exit codes", "examples:"} {
			if !strings.Contains(out, want) {
				t.Errorf("%q: help lacks %q", args, want)
			}
		}
	}
	for _, args := range [][]string{
		{"sessions", "--help"}, {"help", "sessions"}, {"sessions", "list", "--help"}, {"sessions", "show", "-h"},
		{"requests", "requeue", "--help"}, {"users", "-h"}, {"login", "--help"}, {"help", "stats"}, {"--json", "stats", "-h"},
	} {
		code, out, errOut := e.run("", args...)
		if code != exitOK || !strings.Contains(out, "usage: tsctl") || errOut != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	for _, cmd := range commands {
		if !strings.HasPrefix(cmd.help, "usage: tsctl "+cmd.path) || !strings.Contains(cmd.help, "example") {
			t.Errorf("%s: help must start with its usage line and give examples", cmd.path)
		}
	}
	if len(e.api.recorded()) != 0 {
		t.Error("help sent a request")
	}
	// No command at all: usage on stderr, exit 2.
	code, out, errOut := e.run("")
	if code != exitUsage || out != "" || !strings.Contains(errOut, "sessions list") {
		t.Errorf("no args: exit %d, stdout %q", code, out)
	}
}

func TestConfigPath(t *testing.T) {
	vars := map[string]string{"XDG_CONFIG_HOME": "/xdg", "HOME": "/home/ada"}
	getenv := func(k string) string { return vars[k] }
	got, err := configPath(getenv)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS == "linux" && got != filepath.Join("/xdg", "turnstile", "tsctl.json") {
		t.Errorf("with XDG_CONFIG_HOME: %s", got)
	}
	delete(vars, "XDG_CONFIG_HOME")
	if got, _ := configPath(getenv); runtime.GOOS == "linux" && got != "/home/ada/.config/turnstile/tsctl.json" {
		t.Errorf("without XDG_CONFIG_HOME: %s", got)
	}
	vars["TSCTL_CONFIG"] = "/etc/tsctl.json"
	if got, _ := configPath(getenv); got != "/etc/tsctl.json" {
		t.Errorf("TSCTL_CONFIG: %s", got)
	}
}

func TestWithFakeAPI_LoginUnderXDGConfigHome(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("XDG_CONFIG_HOME is a Linux convention here")
	}
	e := newEnv(t)
	xdg := t.TempDir()
	delete(e.vars, "TSCTL_CONFIG")
	e.vars["XDG_CONFIG_HOME"] = xdg
	if code, _, errOut := e.run(fakePassword+"\n", "login", "--email", fakeEmail, "--api", e.url); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	fi, err := os.Stat(filepath.Join(xdg, "turnstile", "tsctl.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v", fi, err)
	}
	if di, _ := os.Stat(filepath.Join(xdg, "turnstile")); di.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", di.Mode().Perm())
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		350 * time.Millisecond:         "350ms",
		4200 * time.Millisecond:        "4.2s",
		45 * time.Second:               "45s",
		3*time.Minute + 7*time.Second:  "3m07s",
		2*time.Hour + 5*time.Minute:    "2h05m",
		76 * time.Hour:                 "3d04h",
		-(3*time.Minute + time.Second): "3m01s",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}
