// Package activities holds the request handlers (one per request type) and
// the Temporal activities that run them and record each request's status in
// MongoDB.
package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
)

// Job is one request as a Handler sees it.
type Job struct {
	// ID is the request ID. Handlers that call other systems pass it on as
	// an idempotency key, since an activity may run more than once.
	ID      string
	UserID  string
	Type    string
	Payload json.RawMessage
	// Attempt counts from 1 and grows with every retry.
	Attempt int
}

// Handler runs one type of request. A returned error is retried according to
// the session's retry policy unless it is wrapped with Permanent. Handlers must
// honour ctx cancellation.
type Handler interface {
	Handle(ctx context.Context, job Job) (json.RawMessage, error)
}

// Validator is implemented by handlers that can reject a bad payload before
// it is queued; the API answers 400 with the error.
type Validator interface {
	Validate(payload json.RawMessage) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, job Job) (json.RawMessage, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, job Job) (json.RawMessage, error) {
	return f(ctx, job)
}

// ErrUnknownType is returned for a request type no handler is registered for.
var ErrUnknownType = errors.New("unknown request type")

// Registry maps request types to handlers. It is safe for concurrent use.
type Registry struct {
	mu       sync.RWMutex
	handlers map[string]Handler
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{handlers: map[string]Handler{}}
}

// Register adds h for requests of type name, replacing any earlier one.
func (r *Registry) Register(name string, h Handler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handlers[name] = h
}

// Lookup returns the handler for name.
func (r *Registry) Lookup(name string) (Handler, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	h, ok := r.handlers[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownType, name)
	}
	return h, nil
}

// Types lists the registered request types, sorted.
func (r *Registry) Types() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.handlers))
	for name := range r.handlers {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Validate checks that a handler exists for typ and, if it is a Validator,
// that it accepts payload.
func (r *Registry) Validate(typ string, payload json.RawMessage) error {
	h, err := r.Lookup(typ)
	if err != nil {
		return err
	}
	if v, ok := h.(Validator); ok {
		return v.Validate(payload)
	}
	return nil
}

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent wraps err so the request fails at once instead of being retried.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was wrapped with Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}
