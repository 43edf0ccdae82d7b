package docker

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// dockerfiles are the images this repository builds and the one program
// each must build.
var dockerfiles = map[string]string{
	"Dockerfile":       "./cmd/turnstile",
	"tsctl.Dockerfile": "./cmd/tsctl",
}

// stage is one FROM section of a Dockerfile.
type stage struct {
	name   string // the AS name, or the stage's index
	base   string // the image, ARG defaults substituted
	instrs []*parser.Node
}

// goBuild is one `go build` command of a RUN instruction.
type goBuild struct {
	output   string
	packages []string
	mounts   []string // the RUN's --mount flags
}

func TestDockerfiles(t *testing.T) {
	goLine := goDirective(t)
	for file, wantPkg := range dockerfiles {
		t.Run(file, func(t *testing.T) {
			stages := parseDockerfile(t, file)
			if len(stages) < 2 {
				t.Fatalf("%s has %d stage(s); want a build stage and a small final stage", file, len(stages))
			}
			builds := map[string][]goBuild{} // stage name → its go builds
			var built []string
			for _, st := range stages {
				for _, n := range st.instrs {
					if n.Value != "run" {
						continue
					}
					for _, b := range goBuilds(n) {
						builds[st.name] = append(builds[st.name], b)
						built = append(built, b.packages...)
						checkGoBuild(t, file, st, b, goLine)
					}
				}
			}
			if len(built) != 1 || built[0] != wantPkg {
				t.Errorf("%s builds %q, want exactly %q", file, built, wantPkg)
			}
			checkFinalStage(t, file, stages[len(stages)-1], builds)
		})
	}
}

// checkGoBuild: the package exists and is a main package, the builder is the
// go.mod Go release, and the module cache is a cache mount.
func checkGoBuild(t *testing.T, file string, st stage, b goBuild, goLine string) {
	t.Helper()
	for _, pkg := range b.packages {
		dir, ok := strings.CutPrefix(pkg, "./")
		if !ok || strings.Contains(pkg, "...") {
			t.Errorf("%s: go build %q: want one ./relative main package", file, pkg)
			continue
		}
		if !isMainPackage(t, filepath.Join(repoRoot, dir)) {
			t.Errorf("%s: go build %s: no main package at %s in the repository", file, pkg, dir)
		}
	}
	if b.output == "" {
		t.Errorf("%s: go build %v has no -o: the final stage cannot name the binary", file, b.packages)
	}
	if !hasCacheMount(b.mounts, "/go/pkg/mod") {
		t.Errorf("%s: go build %v: want --mount=type=cache,target=/go/pkg/mod, got %q", file, b.packages, b.mounts)
	}
	// golang:1.26-bookworm builds a go.mod that says go 1.26.8 (the tag
	// follows the newest 1.26 patch release).
	major := strings.Join(strings.SplitN(goLine, ".", 3)[:2], ".")
	if !strings.HasPrefix(st.base, "golang:"+major) {
		t.Errorf("%s: build stage %s is FROM %s; go.mod says go %s, want golang:%s…", file, st.name, st.base, goLine, major)
	}
}

// checkFinalStage: a small base, a non-root USER, and an ENTRYPOINT that is a
// binary a build stage produced.
func checkFinalStage(t *testing.T, file string, final stage, builds map[string][]goBuild) {
	t.Helper()
	if strings.HasPrefix(final.base, "golang:") {
		t.Errorf("%s: final stage is FROM %s; want a small runtime image", file, final.base)
	}
	user := ""
	copied := map[string]bool{} // destination paths of binaries copied from build stages
	var entrypoint []string
	for _, n := range final.instrs {
		switch n.Value {
		case "user":
			user = nodeArgs(n)[0]
		case "entrypoint":
			entrypoint = nodeArgs(n)
		case "copy":
			from := flagValue(n.Flags, "from")
			if from == "" {
				continue
			}
			args := nodeArgs(n)
			src, dst := args[:len(args)-1], args[len(args)-1]
			for _, s := range src {
				if !producedBy(builds[from], s) {
					t.Errorf("%s: COPY --from=%s %s: that stage builds no such file (its go build outputs: %v)", file, from, s, builds[from])
				}
				if strings.HasSuffix(dst, "/") {
					copied[dst+path.Base(s)] = true
				} else {
					copied[dst] = true
				}
			}
		}
	}
	if user == "" {
		t.Errorf("%s: the final stage sets no USER; it would run as root", file)
	} else if !nonRoot(user) {
		t.Errorf("%s: final USER %q is root", file, user)
	}
	if len(entrypoint) == 0 || !copied[entrypoint[0]] {
		t.Errorf("%s: ENTRYPOINT %q is not a binary copied from a build stage (copied: %v)", file, entrypoint, copied)
	}
}

// nonRoot reports whether a USER value (user[:group]) is not root.
func nonRoot(user string) bool {
	u, _, _ := strings.Cut(user, ":")
	if u == "" || u == "root" {
		return false
	}
	if n, err := strconv.Atoi(u); err == nil {
		return n > 0
	}
	return !strings.ContainsAny(u, "$") // a variable could be anything
}

func producedBy(builds []goBuild, file string) bool {
	for _, b := range builds {
		if b.output == file {
			return true
		}
	}
	return false
}

func hasCacheMount(mounts []string, target string) bool {
	for _, m := range mounts {
		fields := map[string]string{}
		for _, kv := range strings.Split(m, ",") {
			k, v, _ := strings.Cut(kv, "=")
			fields[k] = v
		}
		if fields["type"] == "cache" && (fields["target"] == target || fields["dst"] == target || fields["destination"] == target) {
			return true
		}
	}
	return false
}

// parseDockerfile parses file with BuildKit's parser and splits it into
// stages, substituting the global ARG defaults into FROM.
func parseDockerfile(t *testing.T, file string) []stage {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	for _, w := range res.Warnings {
		t.Errorf("%s: parser warning: %s", file, w.Short)
	}
	args := map[string]string{}
	var stages []stage
	for _, n := range res.AST.Children {
		n.Value = strings.ToLower(n.Value) // the instruction as written
		switch {
		case n.Value == "from":
			a := nodeArgs(n)
			st := stage{name: strconv.Itoa(len(stages)), base: expand(a[0], args)}
			if len(a) == 3 && strings.EqualFold(a[1], "as") {
				st.name = a[2]
			}
			stages = append(stages, st)
		case len(stages) == 0 && n.Value == "arg":
			for _, a := range nodeArgs(n) {
				k, v, _ := strings.Cut(a, "=")
				args[k] = strings.Trim(v, `"`)
			}
		case len(stages) == 0:
			t.Errorf("%s:%d: %s before the first FROM", file, n.StartLine, n.Value)
		default:
			stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, n)
		}
	}
	return stages
}

var argRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

func expand(s string, args map[string]string) string {
	return argRef.ReplaceAllStringFunc(s, func(m string) string {
		return args[argRef.FindStringSubmatch(m)[1]]
	})
}

func nodeArgs(n *parser.Node) []string {
	var out []string
	for a := n.Next; a != nil; a = a.Next {
		out = append(out, a.Value)
	}
	return out
}

func flagValue(flags []string, name string) string {
	for _, f := range flags {
		if v, ok := strings.CutPrefix(f, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// goBuilds finds the `go build` commands of a RUN (shell form).
func goBuilds(run *parser.Node) []goBuild {
	var mounts []string
	for _, f := range run.Flags {
		if v, ok := strings.CutPrefix(f, "--mount="); ok {
			mounts = append(mounts, v)
		}
	}
	script := strings.Join(nodeArgs(run), " ")
	var out []goBuild
	for _, cmd := range regexp.MustCompile(`&&|\|\||;|\n`).Split(script, -1) {
		words := shellWords(cmd)
		if len(words) < 2 || words[0] != "go" || words[1] != "build" {
			continue
		}
		b := goBuild{mounts: mounts}
		for i := 2; i < len(words); i++ {
			w := words[i]
			switch {
			case w == "-o" && i+1 < len(words):
				b.output = words[i+1]
				i++
			case strings.HasPrefix(w, "-o="):
				b.output = strings.TrimPrefix(w, "-o=")
			case goBuildValueFlags[w] && i+1 < len(words):
				i++
			case strings.HasPrefix(w, "-"):
			default:
				b.packages = append(b.packages, w)
			}
		}
		out = append(out, b)
	}
	return out
}

// goBuildValueFlags take the next word as their value when written without "=".
var goBuildValueFlags = map[string]bool{
	"-ldflags": true, "-gcflags": true, "-asmflags": true, "-tags": true, "-mod": true,
	"-modfile": true, "-p": true, "-pkgdir": true, "-overlay": true, "-pgo": true,
	"-buildmode": true, "-compiler": true, "-installsuffix": true, "-toolexec": true,
	"-gccgoflags": true, "-coverpkg": true, "-covermode": true,
}

// shellWords splits a command line into words, honouring quotes and
// backslashes; enough for the commands of a Dockerfile RUN.
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\' && quote != '\'':
			escaped = true
			inWord = true
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote = r
			inWord = true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

func isMainPackage(t *testing.T, dir string) bool {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if regexp.MustCompile(`(?m)^package main\b`).Match(b) {
			return true
		}
	}
	return false
}

// goDirective is the go line of go.mod ("1.26.8").
func goDirective(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+(\.\d+)?)\s*$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

// TestShellWordsAndGoBuilds pins the small parsers the Dockerfile checks rely on.
func TestShellWordsAndGoBuilds(t *testing.T) {
	got := fmt.Sprintf("%q", shellWords(`go build -trimpath -ldflags="-s -w" -o /out/x './cmd/a b' \"q`))
	want := `["go" "build" "-trimpath" "-ldflags=-s -w" "-o" "/out/x" "./cmd/a b" "\"q"]`
	if got != want {
		t.Fatalf("shellWords = %s, want %s", got, want)
	}
	n := &parser.Node{Value: "run", Flags: []string{"--mount=type=cache,target=/go/pkg/mod"},
		Next: &parser.Node{Value: `go mod download && go build -tags netgo -o /out/t ./cmd/turnstile; echo done`}}
	bs := goBuilds(n)
	if len(bs) != 1 || bs[0].output != "/out/t" || fmt.Sprint(bs[0].packages) != "[./cmd/turnstile]" || !hasCacheMount(bs[0].mounts, "/go/pkg/mod") {
		t.Fatalf("goBuilds = %+v", bs)
	}
	for user, want := range map[string]bool{"10001:10001": true, "nonroot": true, "65532": true, "root": false, "0:0": false, "0": false, "": false} {
		if nonRoot(user) != want {
			t.Errorf("nonRoot(%q) = %v", user, !want)
		}
	}
}
