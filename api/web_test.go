package api

import (
	"strings"
	"testing"
)

func TestWebClientIsServedWithAStrictPolicy(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ path, typ, has string }{
		{"/", "text/html", `<script src="/web/app.js"`},
		{"/web/app.js", "text/javascript", "/v1/events"},
		{"/web/style.css", "text/css", "sr-only"},
	} {
		w := f.do("GET", c.path, "")
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), c.typ) || !strings.Contains(w.Body.String(), c.has) {
			t.Errorf("GET %s: %d %s", c.path, w.Code, w.Header().Get("Content-Type"))
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: CSP %q", c.path, csp)
		}
	}
	for _, p := range []string{"/web/", "/web/nope.js", "/web/../web.go", "/web/%2e%2e/web.go", "/web/index"} {
		if w := f.do("GET", p, ""); w.Code != 404 {
			t.Errorf("GET %s: %d, want 404", p, w.Code)
		}
	}
}
