package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/turnstile/turnstile/activities"
)

// The fuzz targets run their seed corpus as ordinary tests; to search for
// more, e.g.: go test -run='^$' -fuzz=FuzzDecodeSubmission -fuzztime=20s ./api

// FuzzDecodeSubmission feeds arbitrary bodies through the body limits,
// decodeJSON and item validation, as POST /v1/requests and the batch route
// do. It must never panic, and whatever it accepts must be one object with
// known fields only, nested within the limit, with a valid compact payload.
func FuzzDecodeSubmission(f *testing.F) {
	for _, seed := range []string{
		`{"type":"echo","payload":{"a":[1,2,{"b":null}]}}`,
		`{"type":"sleep","payload":{"ms":10}}`,
		`{"type":"echo"}`,
		`{"type":"echo","payload":"\"[[[["}`,
		`{"type":"echo","status":"succeeded"}`,
		`{"type":"echo","user_id":"someone-else"}`,
		`{"requests":[{"type":"echo","payload":1},{"type":"echo","attempts":9}]}`,
		`{"type":"echo","payload":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
		`{"type":"echo"}}`,
		`{"type":"echo"} {"type":"echo"}`,
		`null`, `[]`, ``, `{`, `{"type":1}`, "{\"type\":\"echo\",\"payload\":\"\xff\"}",
		`{"Type":"echo","PAYLOAD":1}`, `{"type":"echo","type":"sleep"}`,
	} {
		f.Add([]byte(seed))
	}
	const depth, maxBody = 8, 4 << 10
	reg := activities.NewRegistry()
	reg.Register("echo", activities.Echo{})
	reg.Register("sleep", activities.Sleep{})
	s := &server{cfg: Config{Types: reg, MaxPayloadBytes: 1 << 10}}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := newDepthLimitReader(http.MaxBytesReader(nil, io.NopCloser(bytes.NewReader(body)), maxBody), depth)
		var batch struct {
			Requests []submitItem `json:"requests"`
		}
		var item submitItem
		target := any(&item)
		if bytes.Contains(body, []byte(`"requests"`)) {
			target = &batch
		}
		err := decodeJSONFrom(r, target)
		var ae apiError
		if err != nil {
			if !errors.As(err, &ae) || ae.Status < 400 || ae.Status > 499 {
				t.Fatalf("decode error %v is not a 4xx apiError", err)
			}
			return
		}
		if len(body) > maxBody {
			t.Fatalf("accepted a %d-byte body over the %d limit", len(body), maxBody)
		}
		if nestingDepth(body) > depth {
			t.Fatalf("accepted nesting %d over the limit %d: %q", nestingDepth(body), depth, body)
		}
		if !jsonObjectWithOnly(body, "type", "payload", "requests") {
			t.Fatalf("accepted a body with other fields or not one object: %q", body)
		}
		items := batch.Requests
		if target == &item {
			items = []submitItem{item}
		}
		for _, it := range items {
			payload, err := s.validate(it)
			if err != nil {
				if !errors.As(err, &ae) || ae.Status < 400 || ae.Status > 499 {
					t.Fatalf("validate error %v is not a 4xx apiError", err)
				}
				continue
			}
			if !json.Valid([]byte(payload)) || len(payload) > s.cfg.MaxPayloadBytes {
				t.Fatalf("validated payload %q is invalid or too big", payload)
			}
			if it.Type != "echo" && it.Type != "sleep" {
				t.Fatalf("validated unknown type %q", it.Type)
			}
		}
	})
}

// nestingDepth is the reference the depth limiter is checked against: the
// maximum depth the standard decoder's tokens reach.
func nestingDepth(body []byte) int {
	dec := json.NewDecoder(bytes.NewReader(body))
	depth, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return deepest
		}
		if d, ok := tok.(json.Delim); ok {
			if d == '{' || d == '[' {
				depth++
				deepest = max(deepest, depth)
			} else {
				depth--
			}
		}
	}
}

// jsonObjectWithOnly reports whether body is one JSON object whose keys all
// match (case-insensitively, as encoding/json matches fields) one of keys.
func jsonObjectWithOnly(body []byte, keys ...string) bool {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return false
	}
	for k := range m {
		ok := false
		for _, want := range keys {
			ok = ok || strings.EqualFold(k, want)
		}
		if !ok {
			return false
		}
	}
	return true
}

// FuzzDepthLimitReader checks the streaming depth limiter against the
// decoder on valid JSON, read in small chunks so nesting spans reads.
func FuzzDepthLimitReader(f *testing.F) {
	for _, seed := range []string{`[[[]]]`, `{"a":{"b":[1,{"c":"]]]\"[[["}]}}`, `"\\"`, `[1,[2,[3,[4]]]]`, `{}`} {
		f.Add([]byte(seed), uint8(3))
	}
	f.Fuzz(func(t *testing.T, body []byte, limit uint8) {
		if !json.Valid(body) || limit == 0 {
			return
		}
		r := newDepthLimitReader(&chunkReader{data: body, n: 3}, int(limit))
		_, err := io.ReadAll(r)
		want := nestingDepth(body) > int(limit)
		var tooDeep errTooDeep
		if got := errors.As(err, &tooDeep); got != want {
			t.Fatalf("depth %d, limit %d: limiter error %v", nestingDepth(body), limit, err)
		}
	})
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	data []byte
	n    int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), c.n, len(c.data))
	copy(p, c.data[:k])
	c.data = c.data[k:]
	return k, nil
}

// FuzzBearerToken: the parser never panics, and a token it returns is a
// non-empty, space-free part of the header after a Bearer scheme.
func FuzzBearerToken(f *testing.F) {
	for _, seed := range []string{
		"Bearer abc.def.ghi", "bearer abc", "BEARER  abc", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz",
		"Bearer a b", "Bearerabc", "", " Bearer x", "Bearer \tx", "Bearer x\t", "Bearer x\u00a0y", "Bearer \x00",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		tok, err := bearerToken(header)
		if err != nil {
			if tok != "" {
				t.Fatalf("error %v with token %q", err, tok)
			}
			return
		}
		scheme, _, _ := strings.Cut(header, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			t.Fatalf("accepted scheme %q", scheme)
		}
		if tok == "" || strings.ContainsAny(tok, " \t") || !strings.Contains(header, tok) {
			t.Fatalf("bearerToken(%q) = %q", header, tok)
		}
	})
}

// FuzzDecodeCursor: a cursor is accepted only if it names a canonical UUID,
// and every accepted ID survives encodeCursor and decodeCursor unchanged.
func FuzzDecodeCursor(f *testing.F) {
	for _, seed := range []string{
		"", encodeCursor("01a21944-c3be-70d4-b79a-c7c2870ba14c"), encodeCursor("01A21944-C3BE-70D4-B79A-C7C2870BA14C"),
		encodeCursor("{01a21944-c3be-70d4-b79a-c7c2870ba14c}"), encodeCursor("urn:uuid:01a21944-c3be-70d4-b79a-c7c2870ba14c"),
		"!!", "e30", "MDFhMjE5NDQtYzNiZS03MGQ0LWI3OWEtYzdjMjg3MGJhMTRj=", "bm90LWEtdXVpZA",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, cur string) {
		id, err := decodeCursor(cur)
		if err != nil {
			var ae apiError
			if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Code != "invalid_cursor" {
				t.Fatalf("decodeCursor(%q) error %v", cur, err)
			}
			return
		}
		if cur == "" {
			if id != "" {
				t.Fatalf("empty cursor gave %q", id)
			}
			return
		}
		u, perr := uuid.Parse(id)
		if perr != nil || u.String() != id {
			t.Fatalf("decodeCursor(%q) = %q, not a canonical UUID", cur, id)
		}
		if again, err := decodeCursor(encodeCursor(id)); err != nil || again != id {
			t.Fatalf("round trip of %q: %q, %v", id, again, err)
		}
	})
}

// FuzzIdempotencyKey: a key is accepted exactly when it is 1 to 255
// printable ASCII characters without spaces, and returned unchanged.
func FuzzIdempotencyKey(f *testing.F) {
	for _, seed := range []string{"", "order-42", "has space", "tab\t", "ünïcode", strings.Repeat("k", 255), strings.Repeat("k", 256), "\x7f", "~!@#$%^&*()", "a\x00b", "\r\nX-Injected: 1"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, key string) {
		got, err := parseIdempotencyKey(key)
		want := len(key) <= maxIdempotencyKey
		for _, ch := range []byte(key) {
			want = want && ch >= 0x21 && ch <= 0x7e
		}
		if (err == nil) != want {
			t.Fatalf("parseIdempotencyKey(%q) err = %v, want accepted=%v", key, err, want)
		}
		if err == nil && got != key {
			t.Fatalf("parseIdempotencyKey(%q) = %q", key, got)
		}
		var ae apiError
		if err != nil && (!errors.As(err, &ae) || ae.Code != "invalid_idempotency_key") {
			t.Fatalf("error %v is not invalid_idempotency_key", err)
		}
	})
}
