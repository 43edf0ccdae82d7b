package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// defaultAPI is where `turnstile dev` and `make run` serve the API.
const defaultAPI = "http://127.0.0.1:8080"

// config is what tsctl keeps between runs: the API the tokens belong to, who
// logged in, and the token pair. The file holds live credentials, so it is
// written with mode 0600 in a directory of mode 0700.
type config struct {
	API          string `json:"api,omitempty"`
	Email        string `json:"email,omitempty"`
	AccessToken  string `json:"access_token,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// configPath is $TSCTL_CONFIG, else tsctl.json in the turnstile folder of the
// user's config directory. It reads $XDG_CONFIG_HOME through getenv where
// os.UserConfigDir would honour it, so tests and callers see one rule.
func configPath(getenv func(string) string) (string, error) {
	if p := getenv("TSCTL_CONFIG"); p != "" {
		return p, nil
	}
	dir := ""
	switch runtime.GOOS {
	case "windows", "darwin", "ios", "plan9":
		// os.UserConfigDir ignores $XDG_CONFIG_HOME here.
	default:
		if x := getenv("XDG_CONFIG_HOME"); filepath.IsAbs(x) {
			dir = x
		} else if h := getenv("HOME"); h != "" {
			dir = filepath.Join(h, ".config")
		}
	}
	if dir == "" {
		d, err := os.UserConfigDir()
		if err != nil {
			return "", fmt.Errorf("find the config directory (set TSCTL_CONFIG): %w", err)
		}
		dir = d
	}
	return filepath.Join(dir, "turnstile", "tsctl.json"), nil
}

// loadConfig reads the config at path; a missing file is an empty config.
func loadConfig(path string) (config, error) {
	var cfg config
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s is not valid JSON (fix or delete it): %w", path, err)
	}
	return cfg, nil
}

// saveConfig writes cfg to path atomically (a 0600 temporary file renamed
// over the old one), so a crash never leaves half a token file behind.
func saveConfig(path string, cfg config) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tsctl-*.json")
	if err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("save config: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	return nil
}

// savedConfig finds and loads this invocation's config file.
func (c *cli) savedConfig() (path string, cfg config, err error) {
	if path, err = configPath(c.getenv); err != nil {
		return "", cfg, err
	}
	cfg, err = loadConfig(path)
	return path, cfg, err
}

// normalizeAPI checks that raw is an http(s) URL with a host and drops a
// trailing slash, so "http://h:8080/" and "http://h:8080" are the same API.
func normalizeAPI(raw string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("API URL %q is not an http:// or https:// URL with a host", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("API URL %q must not have a query or fragment", raw)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// apiURL is the API this invocation talks to: --api, else $TSCTL_API, else
// the saved one, else defaultAPI.
func (c *cli) apiURL(cfg config) (string, error) {
	raw := c.apiFlag
	for _, alt := range []string{c.getenv("TSCTL_API"), cfg.API, defaultAPI} {
		if raw != "" {
			break
		}
		raw = alt
	}
	u, err := normalizeAPI(raw)
	if err != nil {
		return "", usagef("", "%v", err)
	}
	return u, nil
}
