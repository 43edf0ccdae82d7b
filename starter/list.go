package starter

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/converter"

	"github.com/turnstile/turnstile/models"
)

// SessionFilter selects sessions from Temporal visibility.
type SessionFilter struct {
	// State is "open" (running runs), "closed" (ended runs) or "all".
	State string
	// Paused, when set, keeps only sessions whose Paused attribute matches.
	Paused *bool
}

// Query is the Temporal visibility query for f: the same text works in the
// Web UI's search box.
func (f SessionFilter) Query() string {
	q := []string{fmt.Sprintf("WorkflowType = '%s'", models.SessionWorkflowType)}
	switch f.State {
	case "", "open":
		q = append(q, "ExecutionStatus = 'Running'")
	case "closed":
		q = append(q, "ExecutionStatus != 'Running'")
	}
	if f.Paused != nil {
		q = append(q, fmt.Sprintf("Paused = %t", *f.Paused))
	}
	return strings.Join(q, " AND ")
}

// SessionSummary is one session run as Temporal visibility lists it.
type SessionSummary struct {
	UserID      string     `json:"user_id"`
	Email       string     `json:"email,omitempty"`
	WorkflowID  string     `json:"workflow_id"`
	RunID       string     `json:"run_id"`
	Status      string     `json:"status"`
	QueueLength int64      `json:"queue_length"`
	Paused      bool       `json:"paused"`
	StartedAt   time.Time  `json:"started_at"`
	ClosedAt    *time.Time `json:"closed_at"`
}

// ListSessions returns a page of sessions matching f and the cursor of the
// next page ("" when this is the last).
func (s *Starter) ListSessions(ctx context.Context, f SessionFilter, limit int, cursor string) ([]SessionSummary, string, error) {
	token, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return nil, "", fmt.Errorf("%w: cursor", ErrBadCursor)
	}
	resp, err := s.Client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		PageSize: int32(limit), NextPageToken: token, Query: f.Query(),
	})
	if err != nil {
		return nil, "", fmt.Errorf("list sessions: %w", err)
	}
	out := make([]SessionSummary, 0, len(resp.Executions))
	for _, e := range resp.Executions {
		sum := SessionSummary{
			WorkflowID: e.GetExecution().GetWorkflowId(),
			RunID:      e.GetExecution().GetRunId(),
			Status:     statusName(e.GetStatus().String()),
			StartedAt:  e.GetStartTime().AsTime(),
		}
		if ct := e.GetCloseTime(); ct != nil {
			t := ct.AsTime()
			sum.ClosedAt = &t
		}
		attrs := e.GetSearchAttributes().GetIndexedFields()
		decode(attrs["UserId"], &sum.UserID)
		decode(attrs["QueueLength"], &sum.QueueLength)
		decode(attrs["Paused"], &sum.Paused)
		out = append(out, sum)
	}
	return out, base64.RawURLEncoding.EncodeToString(resp.NextPageToken), nil
}

// ErrBadCursor is returned for a cursor ListSessions did not issue.
var ErrBadCursor = fmt.Errorf("bad cursor")

// CountSessions counts sessions matching f.
func (s *Starter) CountSessions(ctx context.Context, f SessionFilter) (int64, error) {
	resp, err := s.Client.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{Query: f.Query()})
	if err != nil {
		return 0, fmt.Errorf("count sessions: %w", err)
	}
	return resp.GetCount(), nil
}

func decode(p *commonpb.Payload, v any) {
	if p != nil {
		_ = converter.GetDefaultDataConverter().FromPayload(p, v)
	}
}

// statusName turns WORKFLOW_EXECUTION_STATUS_RUNNING into Running.
func statusName(s string) string {
	s = strings.TrimPrefix(s, "WORKFLOW_EXECUTION_STATUS_")
	if s == "" {
		return s
	}
	return s[:1] + strings.ToLower(s[1:])
}

// QueueLength is the user's waiting plus running requests as the session last
// recorded them in its QueueLength search attribute; 0 when no session runs.
// The server answers it alone (no worker involved, never blocked behind a
// busy workflow task); it lags a burst of signals by at most one workflow
// task.
func (s *Starter) QueueLength(ctx context.Context, userID string) (int, error) {
	info, err := s.describeRunning(ctx, userID)
	if info == nil {
		return 0, err
	}
	var n int64
	decode(info.GetSearchAttributes().GetIndexedFields()["QueueLength"], &n)
	return int(n), nil
}

// Running reports whether the user's session has a run open and, if so,
// its Paused search attribute. Like QueueLength the server answers it
// alone, without the worker: the event streams read it instead of the
// state query.
func (s *Starter) Running(ctx context.Context, userID string) (running, paused bool, err error) {
	info, err := s.describeRunning(ctx, userID)
	if info == nil {
		return false, false, err
	}
	decode(info.GetSearchAttributes().GetIndexedFields()["Paused"], &paused)
	return true, paused, nil
}

// describeRunning is the user's session run if one is open; nil and no
// error if none is.
func (s *Starter) describeRunning(ctx context.Context, userID string) (*workflowpb.WorkflowExecutionInfo, error) {
	resp, err := s.Client.DescribeWorkflowExecution(ctx, models.SessionWorkflowID(userID), "")
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("describe session of %s: %w", userID, err)
	}
	info := resp.GetWorkflowExecutionInfo()
	if info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return nil, nil
	}
	return info, nil
}

// EndedSince returns the users whose session run ended abnormally
// (terminated, failed or timed out) after since, from Temporal visibility;
// the relay opens a new run for those with work pending.
func (s *Starter) EndedSince(ctx context.Context, since time.Time) ([]string, error) {
	q := fmt.Sprintf("WorkflowType = '%s' AND (ExecutionStatus = 'Terminated' OR ExecutionStatus = 'Failed' OR ExecutionStatus = 'TimedOut') AND CloseTime > '%s'",
		models.SessionWorkflowType, since.UTC().Format(time.RFC3339Nano))
	var (
		users []string
		token []byte
	)
	for {
		resp, err := s.Client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{PageSize: 1000, NextPageToken: token, Query: q})
		if err != nil {
			return nil, fmt.Errorf("list ended sessions: %w", err)
		}
		for _, e := range resp.Executions {
			if u, ok := strings.CutPrefix(e.GetExecution().GetWorkflowId(), models.SessionWorkflowID("")); ok && u != "" {
				users = append(users, u)
			}
		}
		if token = resp.NextPageToken; len(token) == 0 {
			return users, nil
		}
	}
}
