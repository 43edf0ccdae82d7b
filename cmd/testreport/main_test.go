package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// stream is a trimmed `go test -json` run: a passing package with a skip and
// subtests, a failing one, one without tests, one that did not build.
const stream = `{"Action":"start","Package":"example.com/a"}
{"Action":"run","Package":"example.com/a","Test":"TestOne"}
{"Action":"output","Package":"example.com/a","Test":"TestOne","Output":"=== RUN   TestOne\n"}
{"Action":"pass","Package":"example.com/a","Test":"TestOne","Elapsed":0.01}
{"Action":"run","Package":"example.com/a","Test":"TestTable"}
{"Action":"pass","Package":"example.com/a","Test":"TestTable/case_1","Elapsed":0}
{"Action":"skip","Package":"example.com/a","Test":"TestTable/case_2","Elapsed":0}
{"Action":"pass","Package":"example.com/a","Test":"TestTable","Elapsed":0}
{"Action":"skip","Package":"example.com/a","Test":"TestSlow","Elapsed":0}
{"Action":"pass","Package":"example.com/a","Elapsed":1.25}
not json: a stray line
{"Action":"run","Package":"example.com/b","Test":"TestBroken"}
{"Action":"fail","Package":"example.com/b","Test":"TestBroken/sub","Elapsed":0}
{"Action":"fail","Package":"example.com/b","Test":"TestBroken","Elapsed":0.5}
{"Time":"2026-06-30T08:15:00Z","Action":"fail","Package":"example.com/b","Elapsed":0.7}
{"Action":"output","Package":"example.com/c","Output":"?   \texample.com/c\t[no test files]\n"}
{"Action":"skip","Package":"example.com/c","Elapsed":0}
{"ImportPath":"example.com/d","Action":"build-output","Output":"d.go:1: syntax error\n"}
{"ImportPath":"example.com/d [example.com/d.test]","Action":"build-fail"}
{"Action":"start","Package":"example.com/d"}
{"Action":"fail","Package":"example.com/d","Elapsed":0,"FailedBuild":"example.com/d [example.com/d.test]"}
`

func TestReportTable(t *testing.T) {
	var out bytes.Buffer
	at := time.Date(2026, 7, 1, 12, 30, 0, 0, time.UTC)
	err := run([]string{"-commit", "abc123", "-trim", "example.com/"}, strings.NewReader(stream), &out, func() time.Time { return at })
	if !errors.Is(err, errFailed) {
		t.Fatalf("run: %v, want errFailed", err)
	}
	got := out.String()
	for _, want := range []string{
		"Run 2026-06-30 08:15 UTC at commit `abc123`.", // the last event's time, not now
		"| `./a` | pass | 2 | 0 | 1 | 1/2 | 1.2 s |",
		"| `./b` | **FAIL** | 0 | 1 | 0 | 0/1 | 0.7 s |",
		"| `./c` | no tests | 0 | 0 | 0 | – | – |",
		"| `./d` | **build failed** | 0 | 0 | 0 | – | – |",
		"| **total (4 packages)** | **2 package(s) failed** | 2 | 1 | 1 | 1/3 | 1.9 s |",
		"- `./b` TestBroken/sub\n- `./b` TestBroken\n- `./d` did not build",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
}

func TestReportAllPassingWritesFileAndSucceeds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.md")
	in := `{"Action":"pass","Package":"example.com/a","Test":"TestOne","Elapsed":0}` + "\n" +
		`{"Action":"pass","Package":"example.com/a","Elapsed":0.3}` + "\n"
	if err := run([]string{"-o", path, "-trim", ""}, strings.NewReader(in), nil, time.Now); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "| **total (1 packages)** | pass | 1 | 0 | 0 | 0/0 | 0.3 s |") {
		t.Errorf("report:\n%s", b)
	}
}

func TestReportRefusesEmptyInput(t *testing.T) {
	err := run(nil, strings.NewReader("no json here\n"), &bytes.Buffer{}, time.Now)
	if err == nil || errors.Is(err, errFailed) {
		t.Fatalf("run on empty input: %v", err)
	}
}
