package app

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"

	sdklog "go.temporal.io/sdk/log"
)

func TestSDKKeys_SDKLinesCarryTurnstilesKeys(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewJSONHandler(&buf, nil))
	// As the SDK's workflow logger does: tags by With, more by the call.
	l := sdklog.With(sdklog.NewStructuredLogger(slog.New(sdkKeys{base.Handler()})),
		"Namespace", "default", "WorkflowID", "session-u42", "RunID", "r1", "WorkflowType", "Session")
	l.Info("request skipped", "request_id", "q1", "Attempt", 1)
	sdklog.NewStructuredLogger(slog.New(sdkKeys{base.Handler()})).Info("poll", "WorkflowID", "other-wf")

	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	if len(lines) != 2 {
		t.Fatalf("%d lines: %s", len(lines), buf.Bytes())
	}
	var first, second map[string]any
	if err := json.Unmarshal(lines[0], &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(lines[1], &second); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{
		"workflow_id": "session-u42", "user_id": "u42", "run_id": "r1", "request_id": "q1",
		"namespace": "default", "workflow_type": "Session", "attempt": 1.0,
	} {
		if first[k] != v {
			t.Errorf("%s = %v, want %v in %s", k, first[k], v, lines[0])
		}
	}
	if _, ok := first["WorkflowID"]; ok {
		t.Errorf("the SDK's key stayed: %s", lines[0])
	}
	if second["workflow_id"] != "other-wf" || second["user_id"] != nil {
		t.Errorf("a non-session workflow: %s", lines[1])
	}
}
