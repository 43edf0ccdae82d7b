package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
)

const loginHelp = `usage: tsctl login [--api URL] --email EMAIL

Log in to the Turnstile API as an admin and save the API URL, the email and
the token pair in the config file (mode 0600), so later commands need no flags.

The password is read from $TSCTL_PASSWORD when it is set, else as one line from
standard input (on a terminal it is asked for without echo). It is never a flag:
a flag would land in your shell history and in the process list.

A saved login keeps working past the access token's lifetime: on a 401 tsctl
refreshes the pair once and saves the new one.

flags:
  --email EMAIL   the admin's email (default: the email of the saved login)
  --api URL       the API to log in to (global flag; default $TSCTL_API, else
                  the saved URL, else http://127.0.0.1:8080)

examples:
  tsctl login --email admin@example.com                     # asks for the password
  printf '%s\n' "$PW" | tsctl login --api https://turnstile.example.com --email admin@example.com
  TSCTL_PASSWORD="$PW" tsctl login --email admin@example.com
`

const logoutHelp = `usage: tsctl logout

Revoke the saved login's refresh tokens on the API (POST /v1/auth/logout) and
remove the tokens from the config file. The API URL and email stay saved, so the
next "tsctl login" needs no --api. If the API cannot be reached the local tokens
are removed all the same and a warning says so.

example:
  tsctl logout
`

// passwordFlagNames are flag names someone might try for a password; they are
// refused with an explanation instead of "flag provided but not defined".
var passwordFlagNames = map[string]bool{"password": true, "pass": true, "passwd": true, "pw": true, "p": true}

func (c *cli) login(cmd *command, args []string) error {
	for _, a := range args {
		if a == "--" {
			break
		}
		if name, _, _ := flagParts(a); passwordFlagNames[name] {
			return usagef(cmd.path, "the password is never taken as a flag (it would land in shell history and the process list); pipe it on standard input or set TSCTL_PASSWORD")
		}
	}
	fs := newFlags(cmd)
	email := fs.String("email", "", "")
	if _, err := c.parse(cmd, fs, args); err != nil {
		return err
	}
	path, cfg, err := c.savedConfig()
	if err != nil {
		return err
	}
	if *email == "" {
		*email = cfg.Email
	}
	if *email == "" {
		return usagef(cmd.path, "login: --email is required")
	}
	base, err := c.apiURL(cfg)
	if err != nil {
		return err
	}
	password, err := c.readPassword()
	if err != nil {
		return err
	}
	cl, err := c.newClient(base, path, config{})
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]string{"email": *email, "password": password})
	status, out, err := cl.send(context.Background(), http.MethodPost, "/v1/auth/login", nil, body, "")
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return decodeAPIError(status, out)
	}
	var pair tokenPair
	if err := json.Unmarshal(out, &pair); err != nil || pair.AccessToken == "" || pair.RefreshToken == "" {
		return errors.New("the API answered the login with no token pair")
	}
	cfg = config{API: base, Email: *email, AccessToken: pair.AccessToken, RefreshToken: pair.RefreshToken}
	if err := saveConfig(path, cfg); err != nil {
		return err
	}
	if c.json {
		// The tokens stay in the file: stdout of a script is often logged.
		b, _ := json.Marshal(map[string]any{"api": base, "email": *email, "config": path, "expires_in": pair.ExpiresIn})
		return c.printJSON(b)
	}
	fmt.Fprintf(c.stdout, "Logged in to %s as %s; tokens saved in %s.\n", base, *email, path)
	return nil
}

// readPassword takes $TSCTL_PASSWORD, else one line of stdin; on a terminal it
// prompts on stderr and turns echo off while the line is typed.
func (c *cli) readPassword() (string, error) {
	if pw := c.getenv("TSCTL_PASSWORD"); pw != "" {
		return pw, nil
	}
	if f, ok := c.stdin.(*os.File); ok && isTerminal(f) {
		fmt.Fprint(c.stderr, "Password: ")
		restore := echoOff(f, c.stderr)
		defer fmt.Fprintln(c.stderr)
		defer restore()
	}
	line, err := bufio.NewReader(c.stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read the password from standard input: %w", err)
	}
	password := strings.TrimRight(line, "\r\n")
	if password == "" {
		return "", usagef("login", "login: no password: pipe it on standard input (one line) or set TSCTL_PASSWORD")
	}
	return password, nil
}

// isTerminal reports whether f is a character device, as a terminal is.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// echoOff turns off the echo of terminal f with stty, where there is one, and
// returns the function that turns it back on. An interrupt while echo is off
// restores it before tsctl exits, so the shell is not left blind.
func echoOff(f *os.File, stderr io.Writer) (restore func()) {
	stty := func(arg string) error {
		cmd := exec.Command("stty", arg)
		cmd.Stdin = f
		return cmd.Run()
	}
	if stty("-echo") != nil {
		return func() {} // no stty (Windows): the password is echoed
	}
	interrupted := make(chan os.Signal, 1)
	done := make(chan struct{})
	signal.Notify(interrupted, os.Interrupt)
	go func() {
		select {
		case <-interrupted:
			_ = stty("echo")
			fmt.Fprintln(stderr)
			os.Exit(130) // what a shell reports for SIGINT
		case <-done:
		}
	}()
	return func() {
		signal.Stop(interrupted)
		close(done)
		_ = stty("echo")
	}
}

func (c *cli) logout(cmd *command, args []string) error {
	if _, err := c.parse(cmd, newFlags(cmd), args); err != nil {
		return err
	}
	path, cfg, err := c.savedConfig()
	if err != nil {
		return err
	}
	if cfg.AccessToken == "" && cfg.RefreshToken == "" {
		return c.loggedOut(path, "Not logged in; nothing to do.")
	}
	if cl, err := c.newClient(cfg.API, path, cfg); err == nil && cfg.API != "" {
		if _, err := cl.call(context.Background(), http.MethodPost, "/v1/auth/logout", nil, nil); err != nil {
			fmt.Fprintf(c.stderr, "tsctl: warning: the API did not revoke the tokens (%v); removing them here anyway\n", err)
		}
		cfg = cl.cfg // keep nothing a refresh may have just saved
	}
	cfg.AccessToken, cfg.RefreshToken = "", ""
	if err := saveConfig(path, cfg); err != nil {
		return err
	}
	return c.loggedOut(path, "Logged out; tokens removed from "+path+".")
}

func (c *cli) loggedOut(path, msg string) error {
	if c.json {
		b, _ := json.Marshal(map[string]any{"logged_out": true, "config": path})
		return c.printJSON(b)
	}
	fmt.Fprintln(c.stdout, msg)
	return nil
}
