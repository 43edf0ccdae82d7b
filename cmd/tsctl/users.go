package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/turnstile/turnstile/models"
)

const usersListHelp = `usage: tsctl users list [--limit N] [--cursor C] [--all-pages]

List accounts: ID, EMAIL, ROLE (user or admin), STATUS (active or disabled)
and CREATED. The API pages the list; without --all-pages tsctl shows one page
and prints the cursor of the next.

flags:
  --limit N      users per page (default: the API's)
  --cursor C     start at this page (the cursor a previous page printed)
  --all-pages    follow the cursors and show every page; with --json the pages
                 are merged into one {"users":[...],"next_cursor":null}

examples:
  tsctl users list
  tsctl users list --all-pages --json | jq -r '.users[] | select(.disabled) | .email'
`

const usersDisableHelp = `usage: tsctl users disable USER_ID

Disable an account: it can no longer log in, refresh its tokens or submit
requests. Its requests already accepted still run. Undo with "tsctl users enable".

example:
  tsctl users disable 0192f3c1-7a8e-7d41-9a56-3f0c2b1e4d5a
`

const usersEnableHelp = `usage: tsctl users enable USER_ID

Enable a disabled account again.

example:
  tsctl users enable 0192f3c1-7a8e-7d41-9a56-3f0c2b1e4d5a
`

const statsHelp = `usage: tsctl stats

Show counts across Turnstile: users, requests by status (queued, running,
succeeded, failed, cancelled) and sessions (open, and how many of those are
paused).

examples:
  tsctl stats
  tsctl stats --json | jq .requests.failed
`

func (c *cli) usersList(cmd *command, args []string) error {
	fs := newFlags(cmd)
	limit := fs.Int("limit", 0, "")
	cursor := fs.String("cursor", "", "")
	all := fs.Bool("all-pages", false, "")
	if _, err := c.parse(cmd, fs, args); err != nil {
		return err
	}
	q := url.Values{}
	if err := setPaging(cmd, q, *limit, *cursor); err != nil {
		return err
	}
	items, next, printed, err := c.fetchList("/v1/admin/users", "users", q, *all)
	if err != nil || printed {
		return err
	}
	if len(items) == 0 {
		fmt.Fprintln(c.stdout, "No users.")
		return nil
	}
	tw := table(c.stdout)
	fmt.Fprintln(tw, "ID\tEMAIL\tROLE\tSTATUS\tCREATED")
	for _, it := range items {
		var u models.User
		if err := decodeInto(it, &u, "user"); err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.ID, u.Email, u.Role, userStatus(u), c.when(u.CreatedAt))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	c.printNextPage(cmd, next)
	return nil
}

func userStatus(u models.User) string {
	if u.Disabled {
		return "disabled"
	}
	return "active"
}

// usersSetDisabled serves disable and enable: a POST to the user's route of
// that name.
func (c *cli) usersSetDisabled(cmd *command, args []string) error {
	action := strings.TrimPrefix(cmd.path, "users ")
	raw, err := c.callOn(cmd, args, "USER_ID", http.MethodPost, func(id string) string {
		return pathOf("/v1/admin/users", id, action)
	})
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	var u models.User
	if err := decodeInto(raw, &u, "user"); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "User %s (%s, %s) is now %s.\n", u.ID, u.Email, u.Role, userStatus(u))
	return nil
}

// statsView is the answer of GET /v1/admin/stats.
type statsView struct {
	Users    int64 `json:"users"`
	Requests struct {
		Queued    int64 `json:"queued"`
		Running   int64 `json:"running"`
		Succeeded int64 `json:"succeeded"`
		Failed    int64 `json:"failed"`
		Cancelled int64 `json:"cancelled"`
	} `json:"requests"`
	Sessions struct {
		Open   int64 `json:"open"`
		Paused int64 `json:"paused"`
	} `json:"sessions"`
}

func (c *cli) stats(cmd *command, args []string) error {
	if _, err := c.parse(cmd, newFlags(cmd), args); err != nil {
		return err
	}
	cl, err := c.loggedIn()
	if err != nil {
		return err
	}
	raw, err := cl.get(context.Background(), "/v1/admin/stats", nil)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(raw)
	}
	var s statsView
	if err := decodeInto(raw, &s, "stats object"); err != nil {
		return err
	}
	r := s.Requests
	tw := table(c.stdout)
	fmt.Fprintf(tw, "Users:\t%d\n", s.Users)
	fmt.Fprintf(tw, "Sessions:\t%d open\t%d paused\n", s.Sessions.Open, s.Sessions.Paused)
	fmt.Fprintf(tw, "Requests:\t%d queued\t%d running\t%d succeeded\t%d failed\t%d cancelled\n",
		r.Queued, r.Running, r.Succeeded, r.Failed, r.Cancelled)
	return tw.Flush()
}
