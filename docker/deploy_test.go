// Package docker holds no code: it is the deployment assets (Dockerfiles,
// compose.yaml, Prometheus and Grafana provisioning) and the tests that check
// them on a machine without a Docker engine. The compose file is loaded and
// resolved with the compose-spec loader, the Dockerfiles are parsed with
// BuildKit's parser, the Prometheus config goes through promtool, and the
// Grafana provisioning is parsed and cross-checked.
package docker

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	enumspb "go.temporal.io/api/enums/v1"
	"go.yaml.in/yaml/v3"

	"github.com/turnstile/turnstile/workflows"
)

// repoRoot is the repository, seen from this package's directory.
const repoRoot = ".."

// Secrets compose.yaml requires (${VAR:?}); the tests supply stand-ins.
var testEnv = map[string]string{
	"TURNSTILE_JWT_KEY": "compose-test-key-0123456789abcdef-0123456789",
	"MONGO_PASSWORD":    "compose-test-password",
}

// Services compose.yaml must define. oneShot ones run to completion and
// others wait for them with service_completed_successfully.
var (
	wantServices = []string{"mongo", "postgresql", "temporal-schema", "temporal", "temporal-setup",
		"temporal-ui", "prometheus", "grafana", "api", "worker", "tsctl"}
	oneShot = []string{"temporal-schema", "temporal-setup"}
)

func loadCompose(t *testing.T, env map[string]string) (*types.Project, error) {
	t.Helper()
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{"compose.yaml"},
		cli.WithWorkingDirectory("."),
		cli.WithEnv(envList),
		cli.WithProfiles([]string{"*"}),
		cli.WithResolvedPaths(true),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(context.Background())
}

func mustLoadCompose(t *testing.T) *types.Project {
	t.Helper()
	p, err := loadCompose(t, testEnv)
	if err != nil {
		t.Fatalf("compose.yaml does not load: %v", err)
	}
	return p
}

func TestComposeLoadsWithEveryService(t *testing.T) {
	p := mustLoadCompose(t)
	if p.Name != "turnstile" {
		t.Errorf("project name %q, want turnstile", p.Name)
	}
	got := p.ServiceNames()
	for _, s := range wantServices {
		if !slices.Contains(got, s) {
			t.Errorf("service %s missing (have %v)", s, got)
		}
	}
	images := map[string]string{"mongo": "mongo:7", "postgresql": "postgres:16",
		"temporal": "temporalio/server:", "temporal-ui": "temporalio/ui:",
		"prometheus": "prom/prometheus:", "grafana": "grafana/grafana:"}
	for name, prefix := range images {
		if img := p.Services[name].Image; !strings.HasPrefix(img, prefix) {
			t.Errorf("%s: image %q, want %s…", name, img, prefix)
		}
	}
}

func TestComposeRefusesToStartWithoutSecrets(t *testing.T) {
	for missing := range testEnv {
		env := map[string]string{}
		for k, v := range testEnv {
			if k != missing {
				env[k] = v
			}
		}
		_, err := loadCompose(t, env)
		if err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("without %s: load error %v, want one naming %s", missing, err, missing)
		}
	}
}

func TestComposeHealthchecksAndDependencies(t *testing.T) {
	p := mustLoadCompose(t)
	for name, s := range p.Services {
		tool := slices.Contains(s.Profiles, "tools")
		switch {
		case slices.Contains(oneShot, name):
			if s.Restart == types.RestartPolicyAlways || s.Restart == types.RestartPolicyUnlessStopped {
				t.Errorf("%s is a one-shot job but restarts %q", name, s.Restart)
			}
		case tool:
		case s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) == 0:
			t.Errorf("%s: long-running service without a healthcheck", name)
		}
		for dep, d := range s.DependsOn {
			target, ok := p.Services[dep]
			if !ok {
				t.Errorf("%s depends on unknown service %s", name, dep)
				continue
			}
			switch d.Condition {
			case types.ServiceConditionHealthy:
				if target.HealthCheck == nil || target.HealthCheck.Disable {
					t.Errorf("%s waits for %s to be healthy, which has no healthcheck", name, dep)
				}
			case types.ServiceConditionCompletedSuccessfully:
				if !slices.Contains(oneShot, dep) {
					t.Errorf("%s waits for %s to complete, which is not a one-shot job", name, dep)
				}
			default:
				t.Errorf("%s depends on %s with condition %q; want service_healthy or service_completed_successfully", name, dep, d.Condition)
			}
		}
	}
	// The start order that matters: the schema before the server, the
	// namespace and search attributes before anything that uses them.
	needs := map[string][]string{
		"temporal":       {"temporal-schema"},
		"temporal-setup": {"temporal"},
		"api":            {"mongo", "temporal-setup"},
		"worker":         {"mongo", "temporal-setup"},
		"grafana":        {"prometheus"},
	}
	for name, deps := range needs {
		for _, dep := range deps {
			if _, ok := p.Services[name].DependsOn[dep]; !ok {
				t.Errorf("%s does not wait for %s", name, dep)
			}
		}
	}
}

func TestComposeWorkerScales(t *testing.T) {
	p := mustLoadCompose(t)
	for name, s := range p.Services {
		// A fixed name would make a second replica (or a second project) collide.
		if s.ContainerName != "" {
			t.Errorf("%s sets container_name %q", name, s.ContainerName)
		}
	}
	w := p.Services["worker"]
	if len(w.Ports) > 0 {
		t.Errorf("worker publishes host ports %v; replicas would collide", w.Ports)
	}
	if w.Deploy != nil && w.Deploy.Mode == "global" {
		t.Error("worker deploy mode is global; --scale needs replicated")
	}
	// What `docker compose up --scale worker=3` does to the model.
	scaled, err := p.WithServicesTransform(func(name string, s types.ServiceConfig) (types.ServiceConfig, error) {
		if name == "worker" {
			s.SetScale(3)
		}
		return s, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if w := scaled.Services["worker"]; w.GetScale() != 3 {
		got := w.GetScale()
		t.Errorf("worker scale %d after --scale worker=3", got)
	}
}

func TestComposeTurnstileServices(t *testing.T) {
	p := mustLoadCompose(t)
	known := configEnvNames(t)
	api, worker := p.Services["api"], p.Services["worker"]
	for _, s := range []types.ServiceConfig{api, worker} {
		if s.Build == nil || s.Build.Dockerfile != "docker/Dockerfile" {
			t.Errorf("%s: build %+v, want docker/Dockerfile", s.Name, s.Build)
		} else if abs, _ := filepath.Abs(repoRoot); s.Build.Context != abs {
			t.Errorf("%s: build context %s, want the repository root %s", s.Name, s.Build.Context, abs)
		}
		if env(s, "TURNSTILE_ENV") != "production" {
			t.Errorf("%s: TURNSTILE_ENV=%q, want production", s.Name, env(s, "TURNSTILE_ENV"))
		}
		if env(s, "TURNSTILE_JWT_KEY") != testEnv["TURNSTILE_JWT_KEY"] {
			t.Errorf("%s: TURNSTILE_JWT_KEY does not come from the environment", s.Name)
		}
		if !strings.Contains(env(s, "TURNSTILE_MONGODB_URI"), "@mongo:27017/") {
			t.Errorf("%s: TURNSTILE_MONGODB_URI=%q does not point at the mongo service", s.Name, env(s, "TURNSTILE_MONGODB_URI"))
		}
		if host, _, _ := net.SplitHostPort(env(s, "TURNSTILE_TEMPORAL_ADDRESS")); host != "temporal" {
			t.Errorf("%s: TURNSTILE_TEMPORAL_ADDRESS=%q, want the temporal service", s.Name, env(s, "TURNSTILE_TEMPORAL_ADDRESS"))
		}
		for k := range s.Environment {
			if strings.HasPrefix(k, "TURNSTILE_") && !known[k] {
				t.Errorf("%s: %s is not a setting app/config.go reads", s.Name, k)
			}
		}
		if s.User != "" && !nonRoot(s.User) {
			t.Errorf("%s runs as user %q", s.Name, s.User)
		}
	}
	if api.Image != worker.Image {
		t.Errorf("api image %q and worker image %q differ; they are one image", api.Image, worker.Image)
	}
	if !slices.Equal(api.Command, types.ShellCommand{"api"}) || !slices.Equal(worker.Command, types.ShellCommand{"worker"}) {
		t.Errorf("commands: api %q, worker %q", api.Command, worker.Command)
	}
	main, err := os.ReadFile(filepath.Join(repoRoot, "cmd/turnstile/main.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"api", "worker"} {
		if !strings.Contains(string(main), `case "`+cmd+`":`) {
			t.Errorf("cmd/turnstile has no %q command", cmd)
		}
	}
	if tsctl := p.Services["tsctl"]; tsctl.Build == nil || tsctl.Build.Dockerfile != "docker/tsctl.Dockerfile" {
		t.Errorf("tsctl: build %+v, want docker/tsctl.Dockerfile", tsctl.Build)
	}
	if _, port, _ := net.SplitHostPort(env(worker, "TURNSTILE_METRICS_ADDR")); port == "" || env(worker, "TURNSTILE_METRICS_ADDR") != "0.0.0.0:"+port {
		t.Errorf("worker TURNSTILE_METRICS_ADDR=%q, want 0.0.0.0:<port> so Prometheus reaches it", env(worker, "TURNSTILE_METRICS_ADDR"))
	}
}

func TestComposeNothingRunsPrivileged(t *testing.T) {
	p := mustLoadCompose(t)
	for name, s := range p.Services {
		if s.Privileged {
			t.Errorf("%s is privileged", name)
		}
		if s.User == "root" || s.User == "0" || strings.HasPrefix(s.User, "0:") || strings.HasPrefix(s.User, "root:") {
			t.Errorf("%s runs as root (user %q)", name, s.User)
		}
		if s.Build != nil {
			// Images built here run as the Dockerfile's final USER, checked
			// non-root by TestDockerfiles.
			if _, ok := dockerfiles[filepath.Base(s.Build.Dockerfile)]; !ok {
				t.Errorf("%s builds %s, which TestDockerfiles does not check", name, s.Build.Dockerfile)
			}
		}
	}
}

func TestComposeBindMountsExist(t *testing.T) {
	p := mustLoadCompose(t)
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s, which does not exist: %v", name, v.Source, err)
			}
		}
	}
}

// TestPrometheusTargetsMatchCompose: the scrape targets are services and
// ports compose actually has, and workers are found by DNS, not listed.
func TestPrometheusTargetsMatchCompose(t *testing.T) {
	p := mustLoadCompose(t)
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
			DNSSDConfigs []struct {
				Names []string `yaml:"names"`
				Type  string   `yaml:"type"`
				Port  int      `yaml:"port"`
			} `yaml:"dns_sd_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, "prometheus/prometheus.yml", &cfg)
	jobs := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		jobs[sc.JobName] = true
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, _, err := net.SplitHostPort(target)
				if err != nil {
					t.Errorf("job %s: target %q: %v", sc.JobName, target, err)
				} else if _, ok := p.Services[host]; !ok && host != "localhost" {
					t.Errorf("job %s: target %s is not a compose service", sc.JobName, target)
				}
			}
		}
		switch sc.JobName {
		case "turnstile-api":
			_, port, _ := net.SplitHostPort(env(p.Services["api"], "TURNSTILE_API_ADDR"))
			if len(sc.StaticConfigs) != 1 || !slices.Equal(sc.StaticConfigs[0].Targets, []string{"api:" + port}) {
				t.Errorf("job turnstile-api scrapes %+v, want api:%s (TURNSTILE_API_ADDR)", sc.StaticConfigs, port)
			}
		case "turnstile-worker":
			_, port, _ := net.SplitHostPort(env(p.Services["worker"], "TURNSTILE_METRICS_ADDR"))
			if len(sc.StaticConfigs) > 0 || len(sc.DNSSDConfigs) != 1 ||
				!slices.Equal(sc.DNSSDConfigs[0].Names, []string{"worker"}) || sc.DNSSDConfigs[0].Type != "A" ||
				port == "" || sc.DNSSDConfigs[0].Port != atoi(t, port) {
				t.Errorf("job turnstile-worker: %+v; want dns_sd_configs names [worker], type A, port %s (TURNSTILE_METRICS_ADDR)", sc.DNSSDConfigs, port)
			}
		}
	}
	for _, j := range []string{"turnstile-api", "turnstile-worker"} {
		if !jobs[j] {
			t.Errorf("no scrape job %s", j)
		}
	}
}

// TestPromtoolCheckConfig runs promtool; it never skips, so a machine
// without promtool fails with the way to get it.
func TestPromtoolCheckConfig(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed: run `make tools` (docker/install-promtool.sh installs the Debian package prometheus)")
	}
	out, err := exec.Command(promtool, "check", "config", "prometheus/prometheus.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// TestGrafanaProvisioning: the datasource and dashboard provider parse, the
// provider reads the folder compose mounts the dashboards into, and every
// panel uses the provisioned datasource.
func TestGrafanaProvisioning(t *testing.T) {
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name, UID, Type, URL string
			IsDefault            bool `yaml:"isDefault"`
		} `yaml:"datasources"`
	}
	readYAML(t, "grafana/provisioning/datasources/prometheus.yaml", &ds)
	if ds.APIVersion != 1 || len(ds.Datasources) != 1 {
		t.Fatalf("datasources: %+v", ds)
	}
	prom := ds.Datasources[0]
	if prom.Type != "prometheus" || prom.UID == "" || !prom.IsDefault || prom.URL != "http://prometheus:9090" {
		t.Errorf("datasource %+v: want the default prometheus type at http://prometheus:9090 with a uid", prom)
	}

	var dp struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name, Type string
			Options    struct{ Path string }
		} `yaml:"providers"`
	}
	readYAML(t, "grafana/provisioning/dashboards/turnstile.yaml", &dp)
	if dp.APIVersion != 1 || len(dp.Providers) != 1 || dp.Providers[0].Type != "file" {
		t.Fatalf("dashboard providers: %+v", dp)
	}
	p := mustLoadCompose(t)
	mounted := map[string]string{} // container path → host path
	for _, v := range p.Services["grafana"].Volumes {
		mounted[v.Target] = v.Source
	}
	dashDir, _ := filepath.Abs("grafana/dashboards")
	if mounted[dp.Providers[0].Options.Path] != dashDir {
		t.Errorf("the provider reads %s, but compose mounts grafana/dashboards at %v", dp.Providers[0].Options.Path, mounted)
	}
	provDir, _ := filepath.Abs("grafana/provisioning")
	if mounted["/etc/grafana/provisioning"] != provDir {
		t.Errorf("compose does not mount grafana/provisioning at /etc/grafana/provisioning: %v", mounted)
	}

	files, _ := filepath.Glob("grafana/dashboards/*.json")
	if len(files) == 0 {
		t.Fatal("no dashboards in grafana/dashboards")
	}
	for _, f := range files {
		var d dashboard
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: dashboard needs a uid and a title", f)
		}
		ids := map[int]bool{}
		var targets int
		for _, pn := range d.allPanels() {
			if ids[pn.ID] {
				t.Errorf("%s: panel id %d used twice", f, pn.ID)
			}
			ids[pn.ID] = true
			if pn.Type == "row" {
				continue
			}
			if pn.Datasource == nil || pn.Datasource.UID != prom.UID {
				t.Errorf("%s: panel %q uses datasource %+v, want uid %s", f, pn.Title, pn.Datasource, prom.UID)
			}
			for _, tg := range pn.Targets {
				targets++
				if tg.Datasource != nil && tg.Datasource.UID != prom.UID {
					t.Errorf("%s: panel %q target %s uses datasource uid %s, want %s", f, pn.Title, tg.RefID, tg.Datasource.UID, prom.UID)
				}
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %q target %s has no expression", f, pn.Title, tg.RefID)
				}
			}
		}
		for _, v := range d.Templating.List {
			if v.Datasource != nil && v.Datasource.UID != prom.UID {
				t.Errorf("%s: variable %s uses datasource uid %s, want %s", f, v.Name, v.Datasource.UID, prom.UID)
			}
		}
		if targets == 0 {
			t.Errorf("%s: no queries", f)
		}
	}
}

// TestTemporalSetupCreatesTheWorkflowsSearchAttributes: the namespace job
// creates exactly the attributes workflows.Session upserts, with their types.
func TestTemporalSetupCreatesTheWorkflowsSearchAttributes(t *testing.T) {
	b, err := os.ReadFile("temporal/setup-namespace.sh")
	if err != nil {
		t.Fatal(err)
	}
	typeName := map[enumspb.IndexedValueType]string{
		enumspb.INDEXED_VALUE_TYPE_KEYWORD: "Keyword",
		enumspb.INDEXED_VALUE_TYPE_INT:     "Int",
		enumspb.INDEXED_VALUE_TYPE_BOOL:    "Bool",
	}
	for _, key := range []interface {
		GetName() string
		GetValueType() enumspb.IndexedValueType
	}{workflows.UserIDAttr, workflows.QueueLengthAttr, workflows.PausedAttr} {
		want := key.GetName() + ":" + typeName[key.GetValueType()]
		if !regexp.MustCompile(`\b` + regexp.QuoteMeta(want) + `\b`).Match(b) {
			t.Errorf("temporal/setup-namespace.sh does not create %s", want)
		}
	}
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string      `json:"name"`
			Datasource *datasource `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// env is a service's environment variable after interpolation.
func env(s types.ServiceConfig, key string) string {
	if v := s.Environment[key]; v != nil {
		return *v
	}
	return ""
}

// configEnvNames are the TURNSTILE_* variables app/config.go reads.
func configEnvNames(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "app/config.go"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`"(TURNSTILE_[A-Z0-9_]+)"`).FindAllSubmatch(b, -1) {
		names[string(m[1])] = true
	}
	if len(names) < 10 {
		t.Fatalf("found only %d TURNSTILE_* names in app/config.go", len(names))
	}
	return names
}

func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("port %q: %v", s, err)
	}
	return n
}
