package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	tsctlOnce sync.Once
	tsctlBin  string
	tsctlErr  error
)

// tsctlBinary builds the real tsctl once per test run.
func tsctlBinary(t *testing.T) string {
	t.Helper()
	tsctlOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tsctl-e2e")
		if err != nil {
			tsctlErr = err
			return
		}
		tsctlBin = filepath.Join(dir, "tsctl")
		out, err := exec.Command("go", "build", "-o", tsctlBin, "../cmd/tsctl").CombinedOutput()
		if err != nil {
			tsctlErr = fmt.Errorf("build tsctl: %v\n%s", err, out)
		}
	})
	if tsctlErr != nil {
		t.Fatal(tsctlErr)
	}
	return tsctlBin
}

// tsctl runs the binary with its own config file and returns stdout and the
// exit code.
type tsctl struct {
	t      *testing.T
	bin    string
	config string
	log    *bytes.Buffer // a transcript of the session
}

func newTsctl(t *testing.T) *tsctl {
	return &tsctl{t: t, bin: tsctlBinary(t), config: filepath.Join(t.TempDir(), "tsctl.json"), log: &bytes.Buffer{}}
}

func (c *tsctl) run(stdin string, args ...string) (string, int) {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(os.Environ(), "TSCTL_CONFIG="+c.config, "TSCTL_API="+shared.base)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		c.t.Fatalf("tsctl %v: %v", args, err)
	}
	fmt.Fprintf(c.log, "$ tsctl %s\n%s%s[exit %d]\n", strings.Join(args, " "), stdout.String(), stderr.String(), code)
	return stdout.String(), code
}

// ok runs a command that must succeed.
func (c *tsctl) ok(args ...string) string {
	c.t.Helper()
	out, code := c.run("", args...)
	if code != 0 {
		c.t.Fatalf("tsctl %v exited %d:\n%s", args, code, c.log)
	}
	return out
}

func (c *tsctl) json(v any, args ...string) {
	c.t.Helper()
	out := c.ok(append([]string{"--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		c.t.Fatalf("tsctl --json %v: %v\n%s", args, err, out)
	}
}

func TestTsctl_OperatorSessionAgainstTheRealAPI(t *testing.T) {
	admin := newAdmin(t)
	u := newUser(t)
	ctl := newTsctl(t)
	defer func() {
		if t.Failed() || os.Getenv("TURNSTILE_TSCTL_TRANSCRIPT") != "" {
			t.Logf("transcript:\n%s", ctl.log)
		}
	}()

	if _, code := ctl.run("", "sessions", "list"); code != 3 {
		t.Fatalf("before login: exit %d, want 3", code)
	}
	if _, code := ctl.run("admin-passw0rd!\n", "login", "--email", admin.email); code != 0 {
		t.Fatalf("login failed:\n%s", ctl.log)
	}
	if fi, err := os.Stat(ctl.config); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}

	long := u.submit("sleep", map[string]int{"ms": 300})
	u.waitStatus(long.ID, "running")
	ctl.ok("sessions", "pause", u.userID)
	ids := u.sinkRequests(1, 3)
	u.waitFinal(long.ID)

	show := ctl.ok("sessions", "show", u.userID)
	for _, id := range ids {
		if !strings.Contains(show, id) {
			t.Fatalf("sessions show lacks queued request %s:\n%s", id, show)
		}
	}
	var st adminSession
	ctl.json(&st, "sessions", "show", u.userID)
	if !st.Paused || st.QueueLength != 3 || st.Queue[0].ID != ids[0] {
		t.Fatalf("sessions show --json: %+v", st)
	}
	if out := ctl.ok("sessions", "list", "--paused"); !strings.Contains(out, u.userID) {
		// Visibility is eventually consistent; try once more after a moment.
		if out = ctl.ok("sessions", "list", "--paused"); !strings.Contains(out, u.userID) {
			t.Fatalf("paused session not listed:\n%s", out)
		}
	}
	var r struct{ Status string }
	ctl.json(&r, "requests", "cancel", ids[1])
	if r.Status != "cancelled" {
		t.Fatalf("requests cancel: %+v", r)
	}
	if _, code := ctl.run("", "requests", "cancel", ids[1]); code != 5 {
		t.Fatalf("cancelling twice: exit %d, want 5", code)
	}
	if _, code := ctl.run("", "requests", "show", "01a2ffff-0000-7000-8000-000000000000"); code != 4 {
		t.Fatalf("unknown request: exit %d, want 4", code)
	}
	ctl.ok("sessions", "policy", u.userID, "pause")
	ctl.ok("sessions", "resume", u.userID)
	u.waitFinal(ids[0], ids[2])
	ctl.json(&r, "requests", "requeue", ids[1])
	if r.Status != "queued" {
		t.Fatalf("requeue: %+v", r)
	}
	u.waitFinal(ids[1])
	if order, _ := shared.sink.report(u.userID); fmt.Sprint(order) != "[1 3 2]" {
		t.Fatalf("sink order %v, want 1 3 then the requeued 2", order)
	}

	if out := ctl.ok("users", "list", "--all-pages"); !strings.Contains(out, u.email) {
		t.Fatalf("users list lacks %s:\n%s", u.email, out)
	}
	ctl.ok("users", "disable", u.userID)
	if r := u.do("GET", "/v1/session", nil); r.status != 401 {
		t.Fatalf("disabled user's token: %d", r.status)
	}
	ctl.ok("users", "enable", u.userID)
	var stats struct{ Users int64 }
	ctl.json(&stats, "stats")
	if stats.Users < 2 {
		t.Fatalf("stats: %+v", stats)
	}
	if _, code := ctl.run("", "sessions", "frobnicate"); code != 2 {
		t.Fatalf("unknown subcommand: exit %d, want 2", code)
	}
	if out := ctl.ok("--help"); !strings.Contains(out, "sessions") {
		t.Fatalf("--help:\n%s", out)
	}

	// A plain user logging in with tsctl is refused the admin API.
	userCtl := newTsctl(t)
	if _, code := userCtl.run("s3cret-passw0rd\n", "login", "--email", u.email); code != 0 {
		t.Fatalf("user login:\n%s", userCtl.log)
	}
	if _, code := userCtl.run("", "stats"); code != 3 {
		t.Fatalf("a user's tsctl stats: exit %d, want 3\n%s", code, userCtl.log)
	}
}
