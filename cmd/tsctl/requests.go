package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/turnstile/turnstile/models"
)

const requestsShowHelp = `usage: tsctl requests show REQUEST_ID

Show any user's request: its user, type, status (queued, running, succeeded,
failed or cancelled), position in the queue while queued, attempts, payload,
result or error, and when it was enqueued, started and finished.

examples:
  tsctl requests show 0192f3c4-1b2a-7c3d-8e4f-5a6b7c8d9e0f
  tsctl requests show 0192f3c4-1b2a-7c3d-8e4f-5a6b7c8d9e0f --json | jq .result
`

const requestsCancelHelp = `usage: tsctl requests cancel REQUEST_ID

Cancel a request that is still waiting in its user's queue; the requests behind
it move up. Exits 5 (conflict) when it is no longer queued (running or
finished).

example:
  tsctl requests cancel 0192f3c4-1b2a-7c3d-8e4f-5a6b7c8d9e0f
`

const requestsRequeueHelp = `usage: tsctl requests requeue REQUEST_ID

Queue a request that has finished (typically a failed one, after its cause was
fixed) again, at the end of its user's queue, with its original payload. Exits
5 (conflict) when the API says it cannot be requeued, e.g. while it is still
queued or running.

example:
  tsctl requests requeue 0192f3c4-1b2a-7c3d-8e4f-5a6b7c8d9e0f
`

// requestView is the request object of the admin request routes.
type requestView struct {
	ID         string          `json:"id"`
	UserID     string          `json:"user_id"`
	Type       string          `json:"type"`
	Payload    json.RawMessage `json:"payload"`
	Status     models.Status   `json:"status"`
	Position   *int            `json:"position"`
	Attempts   int             `json:"attempts"`
	Result     json.RawMessage `json:"result"`
	Error      *string         `json:"error"`
	EnqueuedAt time.Time       `json:"enqueued_at"`
	StartedAt  *time.Time      `json:"started_at"`
	FinishedAt *time.Time      `json:"finished_at"`
}

func (c *cli) requestsShow(cmd *command, args []string) error {
	raw, err := c.callOn(cmd, args, "REQUEST_ID", http.MethodGet, func(id string) string {
		return pathOf("/v1/admin/requests", id)
	})
	if err != nil {
		return err
	}
	return c.printRequest(raw, "")
}

// requestsAct serves cancel and requeue: a POST to the request's route of
// that name.
func (c *cli) requestsAct(cmd *command, args []string) error {
	action := strings.TrimPrefix(cmd.path, "requests ")
	raw, err := c.callOn(cmd, args, "REQUEST_ID", http.MethodPost, func(id string) string {
		return pathOf("/v1/admin/requests", id, action)
	})
	if err != nil {
		return err
	}
	done := "Cancelled."
	if action == "requeue" {
		done = "Requeued."
	}
	return c.printRequest(raw, done)
}

// printRequest shows a request object, after the line done when it is not "".
func (c *cli) printRequest(raw []byte, done string) error {
	if c.json {
		return c.printJSON(raw)
	}
	var r requestView
	if err := decodeInto(raw, &r, "request"); err != nil {
		return err
	}
	if done != "" {
		fmt.Fprintln(c.stdout, done)
		fmt.Fprintln(c.stdout)
	}
	status := string(r.Status)
	if r.Position != nil && r.Status == models.StatusQueued {
		status += fmt.Sprintf(" (position %d in the queue)", *r.Position)
	}
	tw := table(c.stdout)
	fmt.Fprintf(tw, "Request:\t%s\n", r.ID)
	fmt.Fprintf(tw, "User:\t%s\n", r.UserID)
	fmt.Fprintf(tw, "Type:\t%s\n", r.Type)
	fmt.Fprintf(tw, "Status:\t%s\n", status)
	fmt.Fprintf(tw, "Attempts:\t%d\n", r.Attempts)
	fmt.Fprintf(tw, "Enqueued:\t%s\n", c.when(r.EnqueuedAt))
	fmt.Fprintf(tw, "Started:\t%s\n", c.whenPtr(r.StartedAt))
	fmt.Fprintf(tw, "Finished:\t%s\n", c.whenPtr(r.FinishedAt))
	if d := r.timing(c.now()); d != "" {
		fmt.Fprintf(tw, "Took:\t%s\n", d)
	}
	fmt.Fprintf(tw, "Payload:\t%s\n", compactJSON(r.Payload))
	fmt.Fprintf(tw, "Result:\t%s\n", compactJSON(r.Result))
	errText := "-"
	if r.Error != nil && *r.Error != "" {
		errText = *r.Error
	}
	fmt.Fprintf(tw, "Error:\t%s\n", errText)
	return tw.Flush()
}

// timing says how long the request waited and ran, as far as it got.
func (r requestView) timing(now time.Time) string {
	if r.StartedAt == nil {
		return ""
	}
	waited := "waited " + humanDuration(r.StartedAt.Sub(r.EnqueuedAt))
	if r.FinishedAt == nil {
		return waited + ", running for " + humanDuration(now.Sub(*r.StartedAt))
	}
	return waited + ", ran " + humanDuration(r.FinishedAt.Sub(*r.StartedAt))
}
