// Package models holds the plain types every other package shares: users,
// requests and their statuses, and the payloads of the session workflow's
// signals and queries. It depends on nothing but the standard library.
package models

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Role is what a user may do: RoleUser submits requests, RoleAdmin also steers
// every user's queue.
type Role string

// Roles.
const (
	RoleUser  Role = "user"
	RoleAdmin Role = "admin"
)

// User is an account. PasswordHash never leaves the server.
type User struct {
	ID           string    `bson:"_id" json:"id"`
	Email        string    `bson:"email" json:"email"`
	PasswordHash string    `bson:"password_hash" json:"-"`
	Role         Role      `bson:"role" json:"role"`
	Disabled     bool      `bson:"disabled" json:"disabled"`
	CreatedAt    time.Time `bson:"created_at" json:"created_at"`
	// TokensValidAfter is the last logout: access tokens issued before it
	// are refused.
	TokensValidAfter *time.Time `bson:"tokens_valid_after,omitempty" json:"-"`
}

// Status is where a request is in its life: queued → running → one of the
// final statuses.
type Status string

// Statuses.
const (
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
)

// Final reports whether no more work will happen on a request in status s.
func (s Status) Final() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCancelled
}

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	return s == StatusQueued || s == StatusRunning || s.Final()
}

// Request is one unit of a user's work as MongoDB records it. Payload and
// Result are JSON documents kept as text, so any JSON value round-trips.
type Request struct {
	ID     string `bson:"_id"`
	UserID string `bson:"user_id"`
	// Seq is the request's place in its user's sequence, assigned when it
	// is accepted (0 for requests accepted before sequencing). Its ID is
	// RequestID(UserID, Seq).
	Seq            int64      `bson:"seq,omitempty"`
	Type           string     `bson:"type"`
	Payload        string     `bson:"payload"`
	IdempotencyKey string     `bson:"idempotency_key,omitempty"`
	Status         Status     `bson:"status"`
	Attempts       int        `bson:"attempts"`
	Result         string     `bson:"result,omitempty"`
	Error          string     `bson:"error,omitempty"`
	EnqueuedAt     time.Time  `bson:"enqueued_at"`
	StartedAt      *time.Time `bson:"started_at,omitempty"`
	FinishedAt     *time.Time `bson:"finished_at,omitempty"`
	// Naive: run on the benchmark's naive path (see QueuedRequest.Naive).
	Naive bool `bson:"naive,omitempty"`
}

// Workflow names, signal names and query names of the session workflow. They
// are part of the wire contract between API, worker and recorded histories:
// never rename them.
const (
	// TaskQueue is where session workflows and their activities run.
	TaskQueue = "turnstile"
	// SessionWorkflowType is the registered name of the session workflow.
	SessionWorkflowType = "Session"
	// SignalSubmit carries a Submission: requests to append to the queue.
	SignalSubmit = "submit"
	// SignalClose asks the session to end once its queue is empty.
	SignalClose = "close"
	// SignalCancel carries a CancelSignal: drop a queued request.
	SignalCancel = "cancel"
	// SignalPause stops new requests from starting; the running one finishes.
	SignalPause = "pause"
	// SignalResume undoes SignalPause.
	SignalResume = "resume"
	// SignalPolicy carries a PolicySignal: the failure policy from now on.
	SignalPolicy = "policy"
	// SignalRequeue carries a Submission of requests an operator sent back
	// to the tail of the queue. Unlike SignalSubmit it runs a request ID the
	// session has seen before (session version 1 and later).
	SignalRequeue = "requeue"
	// SignalDeliver carries a Delivery: sequenced entries of the user's
	// inbox (session version 5 and later). The session takes in entries
	// after the highest sequence number it has, in order.
	SignalDeliver = "deliver"
	// QueryState returns a SessionState.
	QueryState = "state"
)

// SessionWorkflowID is the ID of a user's session workflow.
func SessionWorkflowID(userID string) string { return "session-" + userID }

// QueuedRequest is a request as the session workflow carries it. The payload
// stays in MongoDB and is loaded when the request starts, so a long queue
// carried across continue-as-new stays far below Temporal's payload limits.
type QueuedRequest struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	EnqueuedAt time.Time `json:"enqueued_at"`
	// Tried is set by the session on a request whose first attempt failed
	// in a batch: the attempts already made count against its budget.
	Tried int `json:"tried,omitempty"`
	// Seq is the inbox entry's sequence number (0 on requests signalled
	// before sequencing). For a requeued request it is the requeue's entry,
	// not the request's own Seq.
	Seq int64 `json:"seq,omitempty"`
	// Naive asks for the straightforward path: a regular activity of its
	// own, never a local activity or a batch. The benchmark compares the
	// two on one running system (Turnstile-Execution: naive).
	Naive bool `json:"naive,omitempty"`
}

// Submission is the payload of SignalSubmit: requests to append, in order.
type Submission struct {
	Requests []QueuedRequest `json:"requests"`
}

// Delivery is the payload of SignalDeliver: the user's inbox entries with
// sequence numbers in (After, Through], in order. Entries skipped in that
// range (a batch that was never committed, a request cancelled before
// delivery) are simply absent. A session whose highest sequence number is
// below After has missed entries and reads them from the store.
type Delivery struct {
	After   int64           `json:"after"`
	Through int64           `json:"through"`
	Entries []QueuedRequest `json:"entries"`
}

// seqDigits is the zero-padded width of a sequence number in a request ID,
// so IDs of one user sort in sequence order.
const seqDigits = 12

// RequestID is the ID of userID's request with sequence number seq.
func RequestID(userID string, seq int64) string {
	return fmt.Sprintf("%s-%0*d", userID, seqDigits, seq)
}

// ParseRequestID splits an ID made by RequestID; ok is false for any other
// string (including the UUIDs of requests accepted before sequencing).
func ParseRequestID(id string) (userID string, seq int64, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 || len(id)-i-1 != seqDigits {
		return "", 0, false
	}
	n, err := strconv.ParseInt(id[i+1:], 10, 64)
	if err != nil || n <= 0 {
		return "", 0, false
	}
	return id[:i], n, true
}

// CloseSignal is the payload of SignalClose from session version 5 on: the
// session ends only once it has taken in every entry through Through (the
// user's last accepted request when the close was asked for), so a close
// never overtakes a delivery still on its way.
type CloseSignal struct {
	Through int64 `json:"through,omitempty"`
}

// CancelSignal is the payload of SignalCancel.
type CancelSignal struct {
	RequestID string `json:"request_id"`
}

// FailurePolicy says what a session does when a request exhausts its retries.
type FailurePolicy string

// Failure policies.
const (
	// PolicyContinue records the failure and runs the next request.
	PolicyContinue FailurePolicy = "continue"
	// PolicyPause records the failure and pauses the queue for an operator.
	PolicyPause FailurePolicy = "pause"
)

// Valid reports whether p is a known policy.
func (p FailurePolicy) Valid() bool { return p == PolicyContinue || p == PolicyPause }

// PolicySignal is the payload of SignalPolicy.
type PolicySignal struct {
	Policy FailurePolicy `json:"policy"`
}

// Session states as SessionState reports them.
const (
	SessionOpen    = "open"    // accepting and running requests
	SessionClosing = "closing" // closed by the user or idle; drains its queue, then ends
	SessionClosed  = "closed"  // no run of the session workflow exists
)

// QueueEntry is one waiting request in a SessionState. Position 1 is the next
// to start.
type QueueEntry struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	Position   int       `json:"position"`
	EnqueuedAt time.Time `json:"enqueued_at"`
	// ETA is the estimated start, filled in by the API (not the session).
	ETA *time.Time `json:"eta,omitempty"`
}

// RunningEntry is the request a session is executing.
type RunningEntry struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	StartedAt time.Time `json:"started_at"`
	// ETA is the estimated finish, filled in by the API (not the session).
	ETA *time.Time `json:"eta,omitempty"`
}

// SessionState is the answer to QueryState.
type SessionState struct {
	UserID      string        `json:"user_id"`
	State       string        `json:"state"`
	Paused      bool          `json:"paused"`
	Policy      FailurePolicy `json:"policy"`
	QueueLength int           `json:"queue_length"`
	Queue       []QueueEntry  `json:"queue"`
	Running     *RunningEntry `json:"running"`
	Processed   int64         `json:"processed"`
	Failed      int64         `json:"failed"`
}

// Settlement is how one try of a request went, for a store that records a
// start and an outcome as one change: a final status with its result or
// error, or running when it failed and will be tried again.
type Settlement struct {
	Status     Status
	Result     string
	Error      string
	Attempts   int
	StartedAt  time.Time
	FinishedAt time.Time
}
