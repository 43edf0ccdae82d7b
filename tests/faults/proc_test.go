//go:build linux

package faults

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one service of the system under test, run as its own OS process
// of the turnstile binary so it can be killed (SIGKILL), frozen (SIGSTOP),
// thawed (SIGCONT) and restarted. Each start writes a log file of its own.
type proc struct {
	name string
	bin  string
	args []string
	env  []string
	dir  string // for log files
	// ready reports whether a start has come up; it is given the text
	// the process has written so far.
	ready func(log string) bool

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	starts  int
	logPath string
	frozen  bool
}

// readyTimeout bounds how long a start may take to come up.
const readyTimeout = 90 * time.Second

// start runs the process and waits until it is ready or has died.
func (p *proc) start() error {
	p.mu.Lock()
	if p.cmd != nil && !p.exitedLocked() {
		p.mu.Unlock()
		return fmt.Errorf("%s is already running", p.name)
	}
	p.starts++
	p.logPath = filepath.Join(p.dir, fmt.Sprintf("%s.%d.log", p.name, p.starts))
	logf, err := os.Create(p.logPath)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = logf, logf
	// The child dies with the test process, whatever kills it; its own
	// process group keeps a terminal's Ctrl-C from reaching it twice.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		p.mu.Unlock()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.frozen = cmd, exited, false
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		_ = logf.Close()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(exited)
	}()

	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("%s exited while starting (%v); log:\n%s", p.name, p.exitErr(), p.tail(30))
		default:
		}
		if p.ready == nil || p.ready(p.logText()) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s; log:\n%s", p.name, readyTimeout, p.tail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *proc) exitedLocked() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// running reports whether the current start is still alive.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !p.exitedLocked()
}

func (p *proc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// waitExit waits until the process has exited or d has passed.
func (p *proc) waitExit(d time.Duration) bool {
	p.mu.Lock()
	ch := p.exited
	p.mu.Unlock()
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exitedLocked() {
		return fmt.Errorf("%s is not running", p.name)
	}
	return p.cmd.Process.Signal(sig)
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	if !p.waitExit(10 * time.Second) {
		return fmt.Errorf("%s survived SIGKILL", p.name)
	}
	return nil
}

// freeze sends SIGSTOP; thaw sends SIGCONT.
func (p *proc) freeze() error {
	if err := p.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	p.mu.Lock()
	p.frozen = true
	p.mu.Unlock()
	return nil
}

func (p *proc) thaw() error {
	if err := p.signal(syscall.SIGCONT); err != nil {
		return err
	}
	p.mu.Lock()
	p.frozen = false
	p.mu.Unlock()
	return nil
}

// restart kills the process if it runs and starts it again.
func (p *proc) restart() error {
	if p.running() {
		if err := p.kill(); err != nil {
			return err
		}
	}
	return p.start()
}

// shutdown stops the process gracefully, or by SIGKILL after a grace period.
func (p *proc) shutdown() {
	if !p.running() {
		return
	}
	p.mu.Lock()
	frozen := p.frozen
	p.mu.Unlock()
	if frozen {
		_ = p.thaw()
	}
	_ = p.signal(syscall.SIGTERM)
	if !p.waitExit(10 * time.Second) {
		_ = p.kill()
	}
}

func (p *proc) logText() string {
	p.mu.Lock()
	path := p.logPath
	p.mu.Unlock()
	data, _ := os.ReadFile(path)
	return string(data)
}

// banner reports whether l belongs to the "Turnstile is running" text a
// dev process prints at start.
func banner(l string) bool {
	l = strings.TrimSpace(l)
	return l == "" || strings.HasPrefix(l, "Turnstile is running") || strings.HasPrefix(l, "Press Ctrl-C") ||
		strings.HasPrefix(l, "Temporal ") || strings.HasPrefix(l, "MongoDB ")
}

// tail returns the current start's last n warnings and errors (JSON log
// lines at WARN or ERROR, and anything else not JSON, such as a panic),
// then its last 3 lines.
func (p *proc) tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.logText(), "\n"), "\n")
	var notable []string
	for _, l := range lines {
		if strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) || !strings.HasPrefix(l, "{") && !banner(l) {
			notable = append(notable, l)
		}
	}
	if len(notable) > n {
		notable = notable[len(notable)-n:]
	}
	last := lines[max(len(lines)-3, 0):]
	var b bytes.Buffer
	for i, group := range [][]string{notable, last} {
		if i == 1 {
			b.WriteString("    (last lines)\n")
		}
		for _, l := range group {
			if len(l) > 400 {
				l = l[:400] + "…"
			}
			b.WriteString("    " + l + "\n")
		}
	}
	return b.String()
}
