package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
)

const (
	ctxUser   = "turnstile.user"
	ctxClaims = "turnstile.claims" // the verified access token's claims
)

// currentUser is the authenticated user of a request behind requireUser.
func currentUser(c *gin.Context) *models.User {
	return c.MustGet(ctxUser).(*models.User)
}

// recoverJSON turns a panic into a logged 500 with the JSON error body.
func (s *server) recoverJSON() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("panic in handler", "panic", fmt.Sprint(p), "path", c.FullPath())
				fail(c, errInternal)
			}
		}()
		c.Next()
	}
}

// accessLog writes one structured line per API call. It never logs bodies,
// headers or query strings, which may hold tokens or passwords.
func (s *server) accessLog() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		attrs := []any{
			"method", c.Request.Method, "route", route, "status", c.Writer.Status(),
			"duration_ms", float64(time.Since(start).Microseconds()) / 1000, "client_ip", c.ClientIP(),
		}
		if u, ok := c.Get(ctxUser); ok {
			attrs = append(attrs, "user_id", u.(*models.User).ID)
		}
		if id := c.GetString("request_id"); id != "" {
			attrs = append(attrs, "request_id", id, "workflow_id", c.GetString("workflow_id"))
		}
		level := slog.LevelInfo
		if len(c.Errors) > 0 {
			attrs = append(attrs, "error", c.Errors.String())
			level = slog.LevelError
		}
		s.log.Log(c.Request.Context(), level, "http request", attrs...)
	}
}

// limitBody caps every request body at MaxBodyBytes and its JSON nesting
// at MaxJSONDepth, whichever route reads it.
func (s *server) limitBody() gin.HandlerFunc {
	return func(c *gin.Context) {
		if c.Request.ContentLength > s.cfg.MaxBodyBytes {
			fail(c, errTooLarge(s.cfg.MaxBodyBytes))
			return
		}
		c.Request.Body = limitedBody{
			Reader: newDepthLimitReader(http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxBodyBytes), s.cfg.MaxJSONDepth),
			Closer: c.Request.Body,
		}
		c.Next()
	}
}

// limitedBody reads through the limits and closes the original body.
type limitedBody struct {
	io.Reader
	io.Closer
}

func errTooLarge(limit int64) apiError {
	return apiError{http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body is larger than %d bytes", limit)}
}

// requireUser authenticates the bearer token and loads its user: a disabled
// or deleted user's tokens stop working at once.
func (s *server) requireUser() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.authenticate(c) {
			c.Next()
		}
	}
}

// authenticate sets the current user from the bearer token, or answers 401
// (or 503) and reports false.
func (s *server) authenticate(c *gin.Context) bool {
	token, err := bearerToken(c.GetHeader("Authorization"))
	if err != nil {
		c.Header("WWW-Authenticate", `Bearer realm="turnstile"`)
		fail(c, errUnauthorized(err.Error()))
		return false
	}
	claims, err := s.cfg.Tokens.Parse(token)
	if err != nil {
		c.Header("WWW-Authenticate", `Bearer realm="turnstile", error="invalid_token"`)
		fail(c, errUnauthorized("invalid or expired access token"))
		return false
	}
	ctx, cancel := backendCtx(c)
	defer cancel()
	u, err := s.store.Users.ByID(ctx, claims.Subject)
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.Header("WWW-Authenticate", `Bearer realm="turnstile", error="invalid_token"`)
		fail(c, errUnauthorized("invalid or expired access token"))
		return false
	case err != nil:
		fail(c, fmt.Errorf("load user: %w", err))
		return false
	}
	if why := accessEnded(u, claims.Issued()); why != "" {
		c.Header("WWW-Authenticate", `Bearer realm="turnstile", error="invalid_token"`)
		fail(c, errUnauthorized(why))
		return false
	}
	c.Set(ctxUser, u)
	c.Set(ctxClaims, claims)
	return true
}

// accessEnded says why u's access token issued at issued no longer works
// ("" while it does): the account is disabled, or a logout came after it.
func accessEnded(u *models.User, issued time.Time) string {
	switch {
	case u.Disabled:
		return "account disabled"
	case u.TokensValidAfter != nil && issued.Before(*u.TokensValidAfter):
		return "access token ended by a logout; log in again"
	}
	return ""
}

// bearerToken extracts the token of an "Authorization: Bearer <token>" header.
func bearerToken(header string) (string, error) {
	if header == "" {
		return "", errors.New("missing Authorization header")
	}
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", errors.New("authorization scheme must be Bearer")
	}
	token = strings.TrimSpace(token)
	if token == "" || strings.ContainsAny(token, " \t") {
		return "", errors.New("malformed bearer token")
	}
	return token, nil
}

// decodeJSON reads exactly one JSON object into v, rejecting unknown fields
// (so a client can never set a field it does not own) and trailing data.
func decodeJSON(c *gin.Context, v any) error {
	return decodeJSONFrom(c.Request.Body, v)
}

// decodeJSONFrom is decodeJSON over any reader; the limits of limitBody
// surface here as their read errors.
func decodeJSONFrom(r io.Reader, v any) error {
	body, err := io.ReadAll(r)
	var tooLarge *http.MaxBytesError
	var tooDeep errTooDeep
	switch {
	case errors.As(err, &tooLarge):
		return errTooLarge(tooLarge.Limit)
	case errors.As(err, &tooDeep):
		return tooDeep.apiError()
	case err != nil:
		return errBadRequest("bad_body", "could not read request body")
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return errBadRequest("bad_json", "request body must be a JSON object")
	}
	// encoding/json would replace bytes that are not UTF-8 with U+FFFD and
	// let the last of two equal keys win: either silently changes what
	// the client sent, so both are refused.
	if !utf8.Valid(body) {
		return errBadRequest("bad_json", "request body is not valid UTF-8")
	}
	if key, dup := duplicateKey(body); dup {
		return errBadRequest("bad_json", fmt.Sprintf("malformed JSON: key %q appears twice in one object", key))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errBadRequest("bad_json", "malformed JSON: "+err.Error())
	}
	// Anything but the end after the object (even a stray "}", which
	// dec.More would miss) is a second value or garbage.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errBadRequest("bad_json", "request body must hold exactly one JSON object")
	}
	return nil
}

// duplicateKey reports the first key that appears twice in one object of
// the JSON text body, at any depth (keys compared after unescaping). A
// syntax error ends the walk without a finding: the decoder reports it.
// Nesting is bounded before this runs (limitBody), so the recursion is too.
func duplicateKey(body []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	key, dup, _ := firstDuplicate(dec)
	return key, dup
}

// firstDuplicate reads one JSON value from dec and reports the first key
// repeated within one of its objects.
func firstDuplicate(dec *json.Decoder) (string, bool, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", false, err
	}
	switch tok {
	case json.Delim('{'):
		keys := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return "", false, err
			}
			k, _ := kt.(string)
			if keys[k] {
				return k, true, nil
			}
			keys[k] = true
			if k, dup, err := firstDuplicate(dec); dup || err != nil {
				return k, dup, err
			}
		}
	case json.Delim('['):
		for dec.More() {
			if k, dup, err := firstDuplicate(dec); dup || err != nil {
				return k, dup, err
			}
		}
	default:
		return "", false, nil // a scalar
	}
	_, err = dec.Token() // the closing delimiter
	return "", false, err
}
