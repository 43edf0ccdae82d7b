package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/turnstile/turnstile/app"
	"github.com/turnstile/turnstile/store"
)

const adminUsage = `usage: turnstile admin create --email EMAIL [--promote]

Creates an admin account directly in MongoDB (TURNSTILE_MONGODB_URI), so the
first operator can log in with tsctl. The password is read from
TURNSTILE_ADMIN_PASSWORD or, if that is unset, from the first line of
standard input; it is never a flag, so it stays out of shell history and ps.

  --promote   make an existing account an admin instead (password unchanged)

example:
  printf '%s\n' 'a long admin password' | turnstile admin create --email ops@example.com
`

// runAdmin implements "turnstile admin ...".
func runAdmin(ctx context.Context, cfg app.Config, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		_, _ = io.WriteString(stderr, adminUsage)
		return errors.New("usage: turnstile admin create --email EMAIL")
	}
	fs := flag.NewFlagSet("admin create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { _, _ = io.WriteString(stderr, adminUsage) }
	email := fs.String("email", "", "email of the admin account")
	promote := fs.Bool("promote", false, "make an existing account an admin")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *email == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("--email is required")
	}
	password := getenv("TURNSTILE_ADMIN_PASSWORD")
	if password == "" && !*promote {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read password: %w", err)
		}
		password = strings.TrimRight(line, "\r\n")
		if password == "" {
			return errors.New("no password: set TURNSTILE_ADMIN_PASSWORD or pipe it on standard input")
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := store.Connect(ctx, cfg.MongoURI, cfg.MongoDatabase)
	if err != nil {
		return err
	}
	defer st.Close(context.Background())
	if err := st.EnsureIndexes(ctx); err != nil {
		return err
	}
	u, err := app.CreateAdmin(ctx, st, *email, password, *promote)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "admin %s (%s) ready; log in with: tsctl login --email %s\n", u.Email, u.ID, u.Email)
	return nil
}
