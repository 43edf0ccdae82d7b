// Command tsctl is the admin CLI of Turnstile: it lists and steers every
// user's session (pause, resume, close, failure policy), shows, cancels and
// requeues requests, disables and enables users and prints counts, by calling
// the Turnstile HTTP API's /v1/admin routes with an admin's token.
//
//	tsctl login --email EMAIL          password on stdin or in $TSCTL_PASSWORD, never a flag
//	tsctl sessions list|show|pause|resume|close|policy
//	tsctl requests show|cancel|requeue
//	tsctl users list|disable|enable
//	tsctl stats
//
// Output is aligned tables for people; the global flag --json prints the API's
// JSON answer instead, indented, for scripts. Global flags (--api, --json) may
// stand anywhere on the command line. The API URL and the tokens live in
// os.UserConfigDir()/turnstile/tsctl.json (or $TSCTL_CONFIG), mode 0600.
//
// Exit codes, the same for every command:
//
//	0  success
//	1  any other error: network, 5xx, 400, 429, an unreadable answer, local I/O
//	2  usage error: unknown command, bad flag or argument; nothing was sent
//	3  not logged in, or the API answered 401 (after one refresh) or 403
//	4  not found: the API answered 404
//	5  conflict: the API answered 409 (e.g. pausing a session that is not running)
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Exit codes; the table is in the package comment and in the main usage.
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitAuth     = 3
	exitNotFound = 4
	exitConflict = 5
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// cli is one invocation: its streams, environment and global flags.
type cli struct {
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
	getenv  func(string) string
	now     func() time.Time
	json    bool   // --json
	apiFlag string // --api, "" when not given
}

// run executes the command line args and returns the process exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv, now: time.Now}
	err := c.dispatch(args)
	if err == nil || errors.Is(err, errHelpShown) {
		return exitOK
	}
	fmt.Fprintf(stderr, "tsctl: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "Run 'tsctl %s' for usage.\n", strings.TrimSpace(ue.cmd+" --help"))
	}
	return exitCode(err)
}

// errHelpShown reports that help was printed as asked: exit 0.
var errHelpShown = errors.New("help shown")

// usageError is a bad command line: exit 2, and nothing was sent. cmd names
// the command whose --help the message points to ("" for tsctl itself).
type usageError struct {
	cmd string
	msg string
}

func (e *usageError) Error() string { return e.msg }

func usagef(cmd, format string, a ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, a...)}
}

// authError is a missing or unusable login found before or instead of an
// API answer: exit 3.
type authError struct{ msg string }

func (e *authError) Error() string { return e.msg }

// exitCode maps err to the documented exit code.
func exitCode(err error) int {
	var ue *usageError
	var au *authError
	var ae *apiError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &au):
		return exitAuth
	case errors.As(err, &ae):
		switch ae.Status {
		case 401, 403:
			return exitAuth
		case 404:
			return exitNotFound
		case 409:
			return exitConflict
		}
	}
	return exitError
}

// command is one leaf of the command tree, such as "sessions list".
type command struct {
	path     string // words after tsctl: "sessions list"
	synopsis string // arguments after the path, for the command lists
	summary  string // one line for the command lists
	help     string // what --help prints
	run      func(c *cli, cmd *command, args []string) error
}

// groups are the commands that only hold subcommands, with their summaries.
var groups = []struct{ name, summary string }{
	{"sessions", "list and steer users' sessions (their request queues)"},
	{"requests", "show, cancel and requeue single requests"},
	{"users", "list, disable and enable accounts"},
}

// commands is the whole command tree. Each command's help text lives next to
// its code.
var commands = []*command{
	{path: "login", synopsis: "[--api URL] --email EMAIL", summary: "log in; the password comes from stdin or $TSCTL_PASSWORD", help: loginHelp, run: (*cli).login},
	{path: "logout", summary: "revoke the saved login and forget its tokens", help: logoutHelp, run: (*cli).logout},
	{path: "sessions list", synopsis: "[--state open|closed|all] [--paused] [--limit N] [--cursor C] [--all-pages]", summary: "list sessions, open ones by default", help: sessionsListHelp, run: (*cli).sessionsList},
	{path: "sessions show", synopsis: "USER_ID", summary: "queue with positions and request IDs, running request, counts", help: sessionsShowHelp, run: (*cli).sessionsShow},
	{path: "sessions pause", synopsis: "USER_ID", summary: "start no new request; the running one finishes", help: sessionsPauseHelp, run: (*cli).sessionsSteer},
	{path: "sessions resume", synopsis: "USER_ID", summary: "undo pause: the queue runs again", help: sessionsResumeHelp, run: (*cli).sessionsSteer},
	{path: "sessions close", synopsis: "USER_ID", summary: "end the session once its queue has drained", help: sessionsCloseHelp, run: (*cli).sessionsSteer},
	{path: "sessions policy", synopsis: "USER_ID continue|pause", summary: "what the session does when a request fails for good", help: sessionsPolicyHelp, run: (*cli).sessionsPolicy},
	{path: "requests show", synopsis: "REQUEST_ID", summary: "status, position, attempts, payload, result, error, times", help: requestsShowHelp, run: (*cli).requestsShow},
	{path: "requests cancel", synopsis: "REQUEST_ID", summary: "cancel a request that is still queued", help: requestsCancelHelp, run: (*cli).requestsAct},
	{path: "requests requeue", synopsis: "REQUEST_ID", summary: "queue a finished request again, at the end of the queue", help: requestsRequeueHelp, run: (*cli).requestsAct},
	{path: "users list", synopsis: "[--limit N] [--cursor C] [--all-pages]", summary: "list accounts", help: usersListHelp, run: (*cli).usersList},
	{path: "users disable", synopsis: "USER_ID", summary: "disable an account: no more logins or requests", help: usersDisableHelp, run: (*cli).usersSetDisabled},
	{path: "users enable", synopsis: "USER_ID", summary: "enable a disabled account again", help: usersEnableHelp, run: (*cli).usersSetDisabled},
	{path: "stats", summary: "counts of users, requests by status, sessions", help: statsHelp, run: (*cli).stats},
}

const mainHelpIntro = `tsctl is Turnstile's admin CLI: it lists and steers every user's request queue.

usage: tsctl [--api URL] [--json] <command> [arguments]

commands:
`

const mainHelpOutro = `
global flags (they may stand anywhere on the line, before or after the command):
  --api URL    the Turnstile API; default: $TSCTL_API, else the URL saved by
               login, else http://127.0.0.1:8080
  --json       print the API's JSON answer, indented, instead of tables
  -h, --help   help for tsctl or for any command ("tsctl sessions list --help")

environment:
  TSCTL_API       the API URL when --api is not given
  TSCTL_PASSWORD  the password for login, instead of a line on stdin
  TSCTL_CONFIG    the config and token file; default:
                  <user config dir>/turnstile/tsctl.json ($XDG_CONFIG_HOME on Linux)
  TSCTL_TIMEOUT   the time limit of one HTTP call (default 30s)

exit codes:
  0  ok
  1  other error (network, 5xx, anything else the API refuses)
  2  usage error (bad flag or argument, unknown command); nothing was sent
  3  not logged in, or the API answered 401 (after one token refresh) or 403
  4  not found (404)
  5  conflict (409): e.g. pausing a session that is not running

examples:
  tsctl login --api http://127.0.0.1:8080 --email admin@example.com   # asks for the password
  tsctl sessions list --paused
  tsctl sessions show 0192f3c1-7a8e-7d41-9a56-3f0c2b1e4d5a
  tsctl sessions policy 0192f3c1-7a8e-7d41-9a56-3f0c2b1e4d5a pause
  tsctl requests requeue 0192f3c4-1b2a-7c3d-8e4f-5a6b7c8d9e0f
  tsctl stats --json | jq .requests.queued
`

// mainHelp is the usage of tsctl itself.
func mainHelp() string {
	var b strings.Builder
	b.WriteString(mainHelpIntro)
	writeCommandList(&b, "")
	b.WriteString(mainHelpOutro)
	return b.String()
}

// groupHelp is the usage of a command group such as "sessions".
func groupHelp(name, summary string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "tsctl %s: %s.\n\nusage: tsctl %s <command> [arguments]\n\ncommands:\n", name, summary, name)
	writeCommandList(&b, name+" ")
	fmt.Fprintf(&b, "\nRun 'tsctl %s <command> --help' for a command's flags and examples,\n'tsctl --help' for the global flags and exit codes.\n", name)
	return b.String()
}

// commandColumn is the width of the command column in the command lists: the
// longest common synopsis ("sessions policy USER_ID continue|pause") fits, and
// the summaries end near column 100.
const commandColumn = 39

// writeCommandList writes one line per command whose path starts with prefix.
func writeCommandList(w io.Writer, prefix string) {
	for _, cmd := range commands {
		if !strings.HasPrefix(cmd.path, prefix) {
			continue
		}
		head := strings.TrimSpace(cmd.path + " " + cmd.synopsis)
		if len(head) > commandColumn {
			fmt.Fprintf(w, "  %s\n  %-*s  %s\n", head, commandColumn, "", cmd.summary)
		} else {
			fmt.Fprintf(w, "  %-*s  %s\n", commandColumn, head, cmd.summary)
		}
	}
}

func isHelpArg(a string) bool {
	return a == "-h" || a == "--help" || a == "-help" || a == "help"
}

// dispatch takes the global flags out of args and runs the command they name.
func (c *cli) dispatch(args []string) error {
	args, err := c.takeGlobalFlags(args)
	if err != nil {
		return err
	}
	if len(args) == 0 {
		fmt.Fprint(c.stderr, mainHelp())
		return usagef("", "no command given")
	}
	if isHelpArg(args[0]) {
		return c.help(args[1:])
	}
	for _, cmd := range commands {
		if cmd.path == args[0] {
			return cmd.run(c, cmd, args[1:])
		}
	}
	for _, g := range groups {
		if g.name != args[0] {
			continue
		}
		if len(args) == 1 {
			fmt.Fprint(c.stderr, groupHelp(g.name, g.summary))
			return usagef(g.name, "%s: no command given", g.name)
		}
		if isHelpArg(args[1]) {
			fmt.Fprint(c.stdout, groupHelp(g.name, g.summary))
			return errHelpShown
		}
		for _, cmd := range commands {
			if cmd.path == g.name+" "+args[1] {
				return cmd.run(c, cmd, args[2:])
			}
		}
		return usagef(g.name, "unknown command %q", g.name+" "+args[1])
	}
	return usagef("", "unknown command %q", args[0])
}

// help serves "tsctl help [group [command]]".
func (c *cli) help(topic []string) error {
	path := strings.Join(topic, " ")
	if path == "" {
		fmt.Fprint(c.stdout, mainHelp())
		return errHelpShown
	}
	for _, cmd := range commands {
		if cmd.path == path {
			fmt.Fprint(c.stdout, cmd.help)
			return errHelpShown
		}
	}
	for _, g := range groups {
		if g.name == path {
			fmt.Fprint(c.stdout, groupHelp(g.name, g.summary))
			return errHelpShown
		}
	}
	return usagef("", "no help for %q: no such command", path)
}

// takeGlobalFlags removes --json and --api from anywhere before a "--" and
// returns the remaining arguments.
func (c *cli) takeGlobalFlags(args []string) ([]string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, value, hasValue := flagParts(a)
		switch name {
		case "json":
			c.json = true
			if hasValue {
				b, err := strconv.ParseBool(value)
				if err != nil {
					return nil, usagef("", "--json takes no value or true/false, not %q", value)
				}
				c.json = b
			}
		case "api":
			if !hasValue {
				if i+1 >= len(args) {
					return nil, usagef("", "--api needs a URL")
				}
				i++
				value = args[i]
			}
			c.apiFlag = value
		default:
			rest = append(rest, a)
		}
	}
	return rest, nil
}

// flagParts splits "-name", "--name" or "--name=value"; name is "" when a is
// not a flag.
func flagParts(a string) (name, value string, hasValue bool) {
	if len(a) < 2 || a[0] != '-' {
		return "", "", false
	}
	a = a[1:]
	if a[0] == '-' {
		a = a[1:]
	}
	if a == "" || a[0] == '-' {
		return "", "", false
	}
	name, value, hasValue = strings.Cut(a, "=")
	return name, value, hasValue
}

// newFlags is an empty flag set for cmd; parse prints its help.
func newFlags(cmd *command) *flag.FlagSet {
	fs := flag.NewFlagSet("tsctl "+cmd.path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parse parses cmd's flags, which may come before, between or after its
// positional arguments, and checks that there are between minArgs and maxArgs
// of those (argNames names them in messages). -h and --help print cmd's help.
func (c *cli) parse(cmd *command, fs *flag.FlagSet, args []string, argNames ...string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(c.stdout, cmd.help)
			return nil, errHelpShown
		} else if err != nil {
			return nil, usagef(cmd.path, "%s: %v", cmd.path, err)
		}
		consumed := len(args) - fs.NArg()
		if consumed > 0 && args[consumed-1] == "--" {
			// Everything after "--" is an argument, even if it looks like a flag.
			positional = append(positional, fs.Args()...)
			break
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
	switch {
	case len(positional) < len(argNames):
		return nil, usagef(cmd.path, "%s: %s is required", cmd.path, argNames[len(positional)])
	case len(positional) > len(argNames):
		return nil, usagef(cmd.path, "%s: unexpected argument %q", cmd.path, positional[len(argNames)])
	}
	for i, p := range positional {
		if strings.TrimSpace(p) == "" {
			return nil, usagef(cmd.path, "%s: %s is empty", cmd.path, argNames[i])
		}
	}
	return positional, nil
}
