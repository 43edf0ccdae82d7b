package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/turnstile/turnstile/models"
)

const sessionsListHelp = `usage: tsctl sessions list [--state open|closed|all] [--paused[=false]] [--limit N] [--cursor C] [--all-pages]

List users' sessions, one row each: USER ID, EMAIL, STATUS (the workflow's
status, e.g. Running or Completed), QUEUE (requests waiting), PAUSED and
STARTED, plus CLOSED for closed sessions. The API pages the list; without
--all-pages tsctl shows one page and prints the cursor of the next.

flags:
  --state S      open (default), closed or all
  --paused       only paused sessions; --paused=false only unpaused ones
  --limit N      sessions per page (default: the API's)
  --cursor C     start at this page (the cursor a previous page printed)
  --all-pages    follow the cursors and show every page; with --json the pages
                 are merged into one {"sessions":[...],"next_cursor":null}

examples:
  tsctl sessions list
  tsctl sessions list --paused
  tsctl sessions list --state all --all-pages --json | jq -r '.sessions[].user_id'
`

const sessionsShowHelp = `usage: tsctl sessions show USER_ID

Show one user's session: its state (open, closing or closed), whether it is
paused, its failure policy, how many requests it has processed and failed, the
request running now and the queue in order, with each waiting request's
position (1 starts next) and ID for "tsctl requests show|cancel".

examples:
  tsctl sessions show 0192f3c1-7a8e-7d41-9a56-3f0c2b1e4d5a
  tsctl sessions show 0192f3c1-7a8e-7d41-9a56-3f0c2b1e4d5a --json | jq '.queue[0].id'
`

const sessionsPauseHelp = `usage: tsctl sessions pause USER_ID

Pause a user's session: the request running now finishes, no queued request
starts, and new requests are still accepted into the queue. Exits 5 (conflict)
when the user has no running session. Undo with "tsctl sessions resume".

example:
  tsctl sessions pause 0192f3c1-7a8e-7d41-9a56-3f0c2b1e4d5a
`

const sessionsResumeHelp = `usage: tsctl sessions resume USER_ID

Resume a paused session: the queue runs again from its head. Exits 5
(conflict) when the user has no running session.

example:
  tsctl sessions resume 0192f3c1-7a8e-7d41-9a56-3f0c2b1e4d5a
`

const sessionsCloseHelp = `usage: tsctl sessions close USER_ID

Close a user's session, as the user's own "disconnect" does: the queued
requests still run, then the session ends. The user's next request opens a new
one.

example:
  tsctl sessions close 0192f3c1-7a8e-7d41-9a56-3f0c2b1e4d5a
`

const sessionsPolicyHelp = `usage: tsctl sessions policy USER_ID continue|pause

Set what the session does when a request fails for good (its retries are
exhausted): "continue" records the failure and runs the next request (the
default); "pause" records it and pauses the queue until an operator resumes it,
for users whose later requests depend on the earlier ones.

examples:
  tsctl sessions policy 0192f3c1-7a8e-7d41-9a56-3f0c2b1e4d5a pause
  tsctl sessions policy 0192f3c1-7a8e-7d41-9a56-3f0c2b1e4d5a continue
`

// sessionSummary is one row of GET /v1/admin/sessions.
type sessionSummary struct {
	UserID      string     `json:"user_id"`
	Email       string     `json:"email"`
	WorkflowID  string     `json:"workflow_id"`
	RunID       string     `json:"run_id"`
	Status      string     `json:"status"`
	QueueLength int        `json:"queue_length"`
	Paused      bool       `json:"paused"`
	StartedAt   time.Time  `json:"started_at"`
	ClosedAt    *time.Time `json:"closed_at"`
}

// sessionView is the session object of the admin session routes: the
// workflow's state plus the user's email.
type sessionView struct {
	models.SessionState
	Email string `json:"email"`
}

// sessionStates are the values of --state.
var sessionStates = map[string]bool{"open": true, "closed": true, "all": true}

func (c *cli) sessionsList(cmd *command, args []string) error {
	fs := newFlags(cmd)
	state := fs.String("state", "open", "")
	paused := fs.Bool("paused", false, "")
	limit := fs.Int("limit", 0, "")
	cursor := fs.String("cursor", "", "")
	all := fs.Bool("all-pages", false, "")
	if _, err := c.parse(cmd, fs, args); err != nil {
		return err
	}
	if !sessionStates[*state] {
		return usagef(cmd.path, "sessions list: --state must be open, closed or all, not %q", *state)
	}
	q := url.Values{"state": {*state}}
	if flagSet(fs, "paused") {
		q.Set("paused", strconv.FormatBool(*paused))
	}
	if err := setPaging(cmd, q, *limit, *cursor); err != nil {
		return err
	}
	items, next, printed, err := c.fetchList("/v1/admin/sessions", "sessions", q, *all)
	if err != nil || printed {
		return err
	}
	rows := make([]sessionSummary, len(items))
	for i, it := range items {
		if err := decodeInto(it, &rows[i], "session"); err != nil {
			return err
		}
	}
	if len(rows) == 0 {
		fmt.Fprintf(c.stdout, "No %ssessions.\n", describeSessionFilter(*state, q.Get("paused")))
		return nil
	}
	showClosed := *state != "open"
	tw := table(c.stdout)
	fmt.Fprint(tw, "USER ID\tEMAIL\tSTATUS\tQUEUE\tPAUSED\tSTARTED")
	if showClosed {
		fmt.Fprint(tw, "\tCLOSED")
	}
	fmt.Fprintln(tw)
	for _, s := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s", s.UserID, s.Email, s.Status, s.QueueLength, yesNo(s.Paused), c.ago(s.StartedAt))
		if showClosed {
			closed := "-"
			if s.ClosedAt != nil {
				closed = c.ago(*s.ClosedAt)
			}
			fmt.Fprintf(tw, "\t%s", closed)
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	c.printNextPage(cmd, next)
	return nil
}

// describeSessionFilter words the filter for "No ... sessions.".
func describeSessionFilter(state, paused string) string {
	var words []string
	switch paused {
	case "true":
		words = append(words, "paused")
	case "false":
		words = append(words, "unpaused")
	}
	if state != "all" {
		words = append(words, state)
	}
	if len(words) == 0 {
		return ""
	}
	return strings.Join(words, " ") + " "
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			found = true
		}
	})
	return found
}

// setPaging adds --limit and --cursor to q.
func setPaging(cmd *command, q url.Values, limit int, cursor string) error {
	if limit < 0 {
		return usagef(cmd.path, "%s: --limit must be a positive number, not %d", cmd.path, limit)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	return nil
}

// printNextPage tells how to see the next page, if there is one.
func (c *cli) printNextPage(cmd *command, next string) {
	if next != "" {
		fmt.Fprintf(c.stdout, "\nMore on the next page: tsctl %s --cursor %s (or --all-pages)\n", cmd.path, next)
	}
}

func (c *cli) sessionsShow(cmd *command, args []string) error {
	raw, err := c.callOn(cmd, args, "USER_ID", http.MethodGet, func(id string) string {
		return pathOf("/v1/admin/sessions", id)
	})
	if err != nil {
		return err
	}
	return c.printSession(raw, "")
}

// sessionsSteer serves pause, resume and close: a POST to the session's route
// of that name.
func (c *cli) sessionsSteer(cmd *command, args []string) error {
	action := strings.TrimPrefix(cmd.path, "sessions ")
	raw, err := c.callOn(cmd, args, "USER_ID", http.MethodPost, func(id string) string {
		return pathOf("/v1/admin/sessions", id, action)
	})
	if err != nil {
		return err
	}
	done := map[string]string{
		"pause":  "Paused: the running request finishes, no queued request starts until resumed.",
		"resume": "Resumed: the queue runs again.",
		"close":  "Closing: the queued requests still run, then the session ends.",
	}[action]
	return c.printSession(raw, done)
}

func (c *cli) sessionsPolicy(cmd *command, args []string) error {
	pos, err := c.parse(cmd, newFlags(cmd), args, "USER_ID", "POLICY (continue or pause)")
	if err != nil {
		return err
	}
	policy := models.FailurePolicy(pos[1])
	if !policy.Valid() {
		return usagef(cmd.path, "sessions policy: the policy must be continue or pause, not %q", pos[1])
	}
	cl, err := c.loggedIn()
	if err != nil {
		return err
	}
	raw, err := cl.call(context.Background(), http.MethodPut, pathOf("/v1/admin/sessions", pos[0], "policy"), nil,
		models.PolicySignal{Policy: policy})
	if err != nil {
		return err
	}
	return c.printSession(raw, "Failure policy set to "+string(policy)+".")
}

// policyMeaning explains a failure policy in the session view.
var policyMeaning = map[models.FailurePolicy]string{
	models.PolicyContinue: "a request that fails for good is recorded and the next one runs",
	models.PolicyPause:    "a request that fails for good pauses the queue for an operator",
}

// printSession shows a session object, after the line done when it is not "".
func (c *cli) printSession(raw []byte, done string) error {
	if c.json {
		return c.printJSON(raw)
	}
	var s sessionView
	if err := decodeInto(raw, &s, "session"); err != nil {
		return err
	}
	if done != "" {
		fmt.Fprintln(c.stdout, done)
		fmt.Fprintln(c.stdout)
	}
	tw := table(c.stdout)
	fmt.Fprintf(tw, "User:\t%s\n", s.UserID)
	if s.Email != "" {
		fmt.Fprintf(tw, "Email:\t%s\n", s.Email)
	}
	fmt.Fprintf(tw, "State:\t%s\n", s.State)
	paused := "no"
	if s.Paused {
		paused = "yes (no queued request starts until resumed)"
	}
	fmt.Fprintf(tw, "Paused:\t%s\n", paused)
	policy := string(s.Policy)
	if m := policyMeaning[s.Policy]; m != "" {
		policy += " (" + m + ")"
	}
	fmt.Fprintf(tw, "Policy:\t%s\n", policy)
	fmt.Fprintf(tw, "Processed:\t%d\n", s.Processed)
	fmt.Fprintf(tw, "Failed:\t%d\n", s.Failed)
	running := "nothing"
	if r := s.Running; r != nil {
		running = fmt.Sprintf("%s  %s  started %s", r.ID, r.Type, c.when(r.StartedAt))
		if r.ETA != nil {
			running += ", estimated finish " + c.eta(*r.ETA)
		}
	}
	fmt.Fprintf(tw, "Running:\t%s\n", running)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout)
	if len(s.Queue) == 0 && s.QueueLength == 0 {
		fmt.Fprintln(c.stdout, "The queue is empty.")
		return nil
	}
	if len(s.Queue) < s.QueueLength {
		fmt.Fprintf(c.stdout, "Queue: %d waiting, the first %d shown:\n", s.QueueLength, len(s.Queue))
	} else {
		fmt.Fprintf(c.stdout, "Queue: %d waiting:\n", s.QueueLength)
	}
	tw = table(c.stdout)
	fmt.Fprintln(tw, "POSITION\tREQUEST ID\tTYPE\tENQUEUED\tESTIMATED START")
	for _, e := range s.Queue {
		start := "-"
		if e.ETA != nil {
			start = c.eta(*e.ETA)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", e.Position, e.ID, e.Type, c.when(e.EnqueuedAt), start)
	}
	return tw.Flush()
}
