package devserver

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/log/tag"
)

// quietLogger returns l (or slog.Default() when l is nil) restricted to records
// at or above min (slog.LevelWarn when min is nil).
func quietLogger(l *slog.Logger, min slog.Leveler) *slog.Logger {
	if l == nil {
		l = slog.Default()
	}
	if min == nil {
		min = slog.LevelWarn
	}
	return slog.New(&levelHandler{min: min, next: l.Handler()})
}

// levelHandler drops records below min before handing them to next.
type levelHandler struct {
	min  slog.Leveler
	next slog.Handler
}

func (h *levelHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= h.min.Level() && h.next.Enabled(ctx, level)
}

func (h *levelHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < h.min.Level() {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *levelHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &levelHandler{min: h.min, next: h.next.WithAttrs(attrs)}
}

func (h *levelHandler) WithGroup(name string) slog.Handler {
	return &levelHandler{min: h.min, next: h.next.WithGroup(name)}
}

// serverLogger adapts an slog.Logger to the Temporal server's log.Logger.
//
// Fatal and Panic log at ERROR and then panic with a *serverFatal instead of
// exiting the process: StartTemporal recovers it and returns an error (the
// server calls Fatal when, say, a port cannot be bound, and would crash on a
// nil listener right after if Fatal returned). Outside StartTemporal the panic
// ends the process, as the server's own zap logger would. DPanic only logs.
type serverLogger struct {
	l *slog.Logger
}

var (
	_ log.Logger      = serverLogger{}
	_ log.WithLogger  = serverLogger{}
	_ log.SLogWrapper = serverLogger{}
)

func (s serverLogger) Debug(msg string, tags ...tag.Tag)  { s.log(slog.LevelDebug, msg, tags) }
func (s serverLogger) Info(msg string, tags ...tag.Tag)   { s.log(slog.LevelInfo, msg, tags) }
func (s serverLogger) Warn(msg string, tags ...tag.Tag)   { s.log(slog.LevelWarn, msg, tags) }
func (s serverLogger) Error(msg string, tags ...tag.Tag)  { s.log(slog.LevelError, msg, tags) }
func (s serverLogger) DPanic(msg string, tags ...tag.Tag) { s.log(slog.LevelError, msg, tags) }
func (s serverLogger) Panic(msg string, tags ...tag.Tag)  { s.fatal(msg, tags) }
func (s serverLogger) Fatal(msg string, tags ...tag.Tag)  { s.fatal(msg, tags) }

func (s serverLogger) fatal(msg string, tags []tag.Tag) {
	s.log(slog.LevelError, msg, tags)
	panic(&serverFatal{msg: msg, tags: tags})
}

// serverFatal is the panic value of serverLogger.Fatal and Panic.
type serverFatal struct {
	msg  string
	tags []tag.Tag
}

func (f *serverFatal) Error() string {
	var b strings.Builder
	b.WriteString(f.msg)
	for _, t := range f.tags {
		fmt.Fprintf(&b, " %s=%v", t.Key(), t.Value())
	}
	return b.String()
}

// With implements log.WithLogger.
func (s serverLogger) With(tags ...tag.Tag) log.Logger {
	return serverLogger{l: s.l.With(tagsToArgs(tags)...)}
}

// SLog implements log.SLogWrapper so server components that want an
// *slog.Logger get the level-filtered one.
func (s serverLogger) SLog() *slog.Logger { return s.l }

func (s serverLogger) log(level slog.Level, msg string, tags []tag.Tag) {
	ctx := context.Background()
	if !s.l.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, len(tags))
	for i, t := range tags {
		attrs[i] = slog.Any(t.Key(), t.Value())
	}
	s.l.LogAttrs(ctx, level, msg, attrs...)
}

func tagsToArgs(tags []tag.Tag) []any {
	args := make([]any, len(tags))
	for i, t := range tags {
		args[i] = slog.Any(t.Key(), t.Value())
	}
	return args
}
