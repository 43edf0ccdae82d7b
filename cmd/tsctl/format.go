package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// timeLayout is how tsctl shows an instant, in local time.
const timeLayout = "2006-01-02 15:04:05"

// printJSON writes an API answer indented, for --json. Key order and numbers
// stay exactly as the API sent them.
func (c *cli) printJSON(raw []byte) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("the API's answer is not JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := c.stdout.Write(buf.Bytes())
	return err
}

// table is an aligned table on w; call flush when done.
func table(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// when shows t as local time and how long ago it was: "2026-05-01 10:22:03 (3m12s ago)".
func (c *cli) when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(timeLayout) + " (" + c.ago(t) + ")"
}

// eta shows an estimated time to come: "in 12s", "in 3m05s", or "any
// moment" once it is due.
func (c *cli) eta(t time.Time) string {
	d := t.Sub(c.now()).Round(time.Second)
	switch {
	case d <= 0:
		return "any moment"
	case d < time.Minute:
		return fmt.Sprintf("in %ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("in %dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return "at " + t.Local().Format(timeLayout)
}

// whenPtr is when for an optional time.
func (c *cli) whenPtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return c.when(*t)
}

// ago shows how long ago t was: "just now", "45s ago", "3h05m ago".
func (c *cli) ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := c.now().Sub(t)
	if d < time.Second {
		// Also a clock a little behind the server's: not "-2s ago".
		return "just now"
	}
	return humanDuration(d) + " ago"
}

// humanDuration shows d with the two largest units that matter: "350ms",
// "4.2s", "3m07s", "2h05m", "3d04h".
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	const day = 24 * time.Hour
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < day:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	default:
		d = d.Round(time.Hour)
		return fmt.Sprintf("%dd%02dh", int(d/day), int(d%day/time.Hour))
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// compactJSON shows a JSON value on one line; "-" when there is none.
func compactJSON(raw json.RawMessage) string {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return "-"
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return string(raw)
	}
	return buf.String()
}

// decodeInto decodes an API answer into v, naming what in the error.
func decodeInto(raw []byte, v any, what string) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("the API's answer is not a valid %s: %w", what, err)
	}
	return nil
}
