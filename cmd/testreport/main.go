// Command testreport turns `go test -json` output into the Markdown table of
// docs/test-results.md: one row per package with its tests passed, failed
// and skipped and its time, then the failures by name.
//
//	go test -json ./... | go run ./cmd/testreport -o docs/test-results.md
//
// It exits 1 when a test or a package failed (after writing the report), so
// a pipeline that ends in it still fails.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// event is one line of `go test -json` (see `go doc test2json`).
type event struct {
	Time    time.Time
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
	// FailedBuild names the package whose build failed this package's run.
	FailedBuild string
}

// pkgResult is what the report says about one package.
type pkgResult struct {
	name                    string
	passed, failed, skipped int // top-level tests
	subPassed, subTotal     int
	elapsed                 float64
	status                  string // pass, fail, skip (no test files), "" (no verdict seen)
	noTests                 bool
	failedTests             []string
	buildFailed             bool
}

// errFailed reports that the suite had failures; the report is written anyway.
var errFailed = errors.New("tests failed")

func main() {
	err := run(os.Args[1:], os.Stdin, os.Stdout, time.Now)
	switch {
	case errors.Is(err, errFailed):
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer, now func() time.Time) error {
	fs := flag.NewFlagSet("testreport", flag.ContinueOnError)
	out := fs.String("o", "", "write the report to this file (default: standard output)")
	title := fs.String("title", "Test results", "the report's heading")
	commit := fs.String("commit", "", "the commit tested, shown in the report")
	trim := fs.String("trim", modulePrefix("go.mod"), "prefix to cut from package paths (default: this directory's module path + \"/\")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	results, ranAt, err := collect(stdin)
	if err != nil {
		return err
	}
	if ranAt.IsZero() {
		ranAt = now()
	}
	for _, r := range results {
		if rest, ok := strings.CutPrefix(r.name, *trim); ok && *trim != "" {
			r.name = "./" + rest
		}
	}
	if len(results) == 0 {
		return errors.New("no `go test -json` events on standard input")
	}
	report := render(results, *title, *commit, ranAt)
	if *out == "" {
		_, err = io.WriteString(stdout, report)
	} else {
		err = writeFile(*out, report)
	}
	if err != nil {
		return err
	}
	for _, r := range results {
		if r.status == "fail" || r.failed > 0 || r.buildFailed {
			return errFailed
		}
	}
	return nil
}

// collect reads the events and tallies them per package, in name order,
// and returns the time of the last event. Lines that are not JSON (a build
// error printed to the same stream) are skipped.
func collect(r io.Reader) ([]*pkgResult, time.Time, error) {
	var last time.Time
	byName := map[string]*pkgResult{}
	get := func(name string) *pkgResult {
		p := byName[name]
		if p == nil {
			p = &pkgResult{name: name}
			byName[name] = p
		}
		return p
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Package == "" {
			continue
		}
		if e.Time.After(last) {
			last = e.Time
		}
		p := get(e.Package)
		switch {
		case e.FailedBuild != "":
			p.buildFailed = true
			p.status = e.Action
		case e.Test == "" && (e.Action == "pass" || e.Action == "fail" || e.Action == "skip"):
			p.status = e.Action
			p.elapsed += e.Elapsed
		case e.Test == "" && e.Action == "output" && strings.Contains(e.Output, "[no test files]"):
			p.noTests = true
		case e.Test == "" && e.Action == "output" && strings.Contains(e.Output, "[build failed]"):
			p.buildFailed = true
		case e.Test != "" && strings.Contains(e.Test, "/"):
			switch e.Action {
			case "pass":
				p.subPassed++
				p.subTotal++
			case "fail", "skip":
				p.subTotal++
			}
			if e.Action == "fail" {
				p.failedTests = append(p.failedTests, e.Test)
			}
		case e.Test != "":
			switch e.Action {
			case "pass":
				p.passed++
			case "fail":
				p.failed++
				p.failedTests = append(p.failedTests, e.Test)
			case "skip":
				p.skipped++
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, last, fmt.Errorf("read: %w", err)
	}
	var out []*pkgResult
	for _, p := range byName {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *pkgResult) int { return strings.Compare(a.name, b.name) })
	return out, last, nil
}

// render writes the Markdown report.
func render(results []*pkgResult, title, commit string, at time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n", title)
	b.WriteString("<!-- Generated by cmd/testreport from `go test -json`; do not edit. Regenerate with `make test-report`. -->\n\n")
	fmt.Fprintf(&b, "Run %s", at.UTC().Format("2006-01-02 15:04 MST"))
	if commit != "" {
		fmt.Fprintf(&b, " at commit `%s`", commit)
	}
	b.WriteString(". What the suites cover: [testing.md](testing.md).\n\n")

	var tot pkgResult
	pkgFailed := 0
	b.WriteString("| package | result | passed | failed | skipped | subtests passed | time |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|\n")
	for _, r := range results {
		verdict := verdictOf(r)
		if verdict == "**FAIL**" || verdict == "**build failed**" {
			pkgFailed++
		}
		sub := "–"
		if r.subTotal > 0 {
			sub = fmt.Sprintf("%d/%d", r.subPassed, r.subTotal)
		}
		fmt.Fprintf(&b, "| `%s` | %s | %d | %d | %d | %s | %s |\n",
			r.name, verdict, r.passed, r.failed, r.skipped, sub, seconds(r.elapsed))
		tot.passed += r.passed
		tot.failed += r.failed
		tot.skipped += r.skipped
		tot.subPassed += r.subPassed
		tot.subTotal += r.subTotal
		tot.elapsed += r.elapsed
	}
	totalVerdict := "pass"
	if pkgFailed > 0 || tot.failed > 0 {
		totalVerdict = fmt.Sprintf("**%d package(s) failed**", pkgFailed)
	}
	fmt.Fprintf(&b, "| **total (%d packages)** | %s | %d | %d | %d | %d/%d | %s |\n",
		len(results), totalVerdict, tot.passed, tot.failed, tot.skipped, tot.subPassed, tot.subTotal, seconds(tot.elapsed))

	var failures []string
	for _, r := range results {
		for _, t := range r.failedTests {
			failures = append(failures, fmt.Sprintf("- `%s` %s", r.name, t))
		}
		if r.buildFailed {
			failures = append(failures, fmt.Sprintf("- `%s` did not build", r.name))
		}
	}
	if len(failures) > 0 {
		b.WriteString("\n## Failures\n\n")
		b.WriteString(strings.Join(failures, "\n"))
		b.WriteString("\n")
	}
	b.WriteString("\nPassed, failed and skipped count top-level tests; subtests are counted apart. Time is each package's test binary, as `go test` reports it (packages run in parallel, so the total is CPU-side, not wall-clock).\n")
	return b.String()
}

func verdictOf(r *pkgResult) string {
	switch {
	case r.buildFailed:
		return "**build failed**"
	case r.status == "fail" || r.failed > 0:
		return "**FAIL**"
	case r.noTests || (r.status == "skip" && r.passed+r.failed+r.skipped == 0):
		return "no tests"
	case r.status == "pass":
		return "pass"
	case r.status == "skip":
		return "skip"
	default:
		return "**no result**" // the stream ended early: a timeout or a crash
	}
}

func seconds(s float64) string {
	if s == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f s", s)
}

// modulePrefix is "<module path>/" from the go.mod at path, or "" without one.
func modulePrefix(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`) + "/"
		}
	}
	return ""
}

// writeFile replaces path atomically, so an interrupted run leaves the old report.
func writeFile(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".testreport-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
