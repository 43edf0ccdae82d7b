package api

import (
	"fmt"
	"io"
	"net/http"
)

// errTooDeep is a body nested deeper than the configured limit.
type errTooDeep struct{ limit int }

func (e errTooDeep) Error() string {
	return fmt.Sprintf("JSON is nested deeper than %d levels", e.limit)
}

func (e errTooDeep) apiError() apiError {
	return apiError{http.StatusBadRequest, "too_deep", e.Error()}
}

// depthLimitReader passes a JSON body through and fails the read as soon as
// arrays and objects nest deeper than limit, before the decoder builds
// anything. It tracks only strings and brackets; whether the rest is valid
// JSON is the decoder's job.
type depthLimitReader struct {
	r        io.Reader
	limit    int
	depth    int
	inString bool
	escaped  bool
	err      error
}

func newDepthLimitReader(r io.Reader, limit int) *depthLimitReader {
	return &depthLimitReader{r: r, limit: limit}
}

func (d *depthLimitReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.r.Read(p)
	for i, b := range p[:n] {
		if d.scan(b) {
			d.err = errTooDeep{d.limit}
			return i, d.err
		}
	}
	return n, err
}

// scan advances over b and reports whether the limit is now exceeded.
func (d *depthLimitReader) scan(b byte) bool {
	switch {
	case d.escaped:
		d.escaped = false
	case d.inString:
		switch b {
		case '\\':
			d.escaped = true
		case '"':
			d.inString = false
		}
	case b == '"':
		d.inString = true
	case b == '{' || b == '[':
		d.depth++
		return d.depth > d.limit
	case b == '}' || b == ']':
		d.depth--
	}
	return false
}
