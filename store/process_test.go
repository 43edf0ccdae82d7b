package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
	"github.com/turnstile/turnstile/store/storetest"
)

// The environment of a racer process (this test binary run again).
const (
	envRacerRole  = "TURNSTILE_TEST_RACER_ROLE"
	envRacerURI   = "TURNSTILE_TEST_RACER_URI"
	envRacerDB    = "TURNSTILE_TEST_RACER_DB"
	envRacerIDs   = "TURNSTILE_TEST_RACER_IDS"
	envRacerStart = "TURNSTILE_TEST_RACER_START"
)

// racerStep is how far apart the racers' rounds are: both processes sleep
// to the same instant before each round, so their operations meet.
const racerStep = 15 * time.Millisecond

// TestMain runs this binary as a racer process when told to.
func TestMain(m *testing.M) {
	if role := os.Getenv(envRacerRole); role != "" {
		os.Exit(runRacer(role))
	}
	os.Exit(m.Run())
}

// runRacer connects its own Store, as a separate API or worker process
// does, and applies its role to each request at its round's instant,
// printing the IDs it won as JSON.
func runRacer(role string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := store.Connect(ctx, os.Getenv(envRacerURI), os.Getenv(envRacerDB))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer func() { _ = s.Close(ctx) }()
	startNs, _ := strconv.ParseInt(os.Getenv(envRacerStart), 10, 64)
	start := time.Unix(0, startNs)
	var won []string
	for i, id := range strings.Split(os.Getenv(envRacerIDs), ",") {
		time.Sleep(time.Until(start.Add(time.Duration(i) * racerStep)))
		var err error
		switch role {
		case "cancel":
			_, err = s.Requests.CancelQueued(ctx, "alice", id, t0)
			if errors.Is(err, store.ErrConflict) {
				continue
			}
		case "start":
			var r *models.Request
			r, err = s.Requests.MarkRunning(ctx, id, "", t0)
			if err == nil && r.Status != models.StatusRunning {
				continue
			}
		case "finish":
			err = s.Requests.Finish(ctx, id, models.StatusSucceeded, "done", "", 2, t0.Add(time.Second))
		case "attempt":
			err = s.Requests.SetAttempts(ctx, id, 1)
			if errors.Is(err, store.ErrConflict) {
				continue
			}
		default:
			err = fmt.Errorf("unknown role %q", role)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, role, id, err)
			return 2
		}
		won = append(won, id)
	}
	_ = json.NewEncoder(os.Stdout).Encode(won)
	return 0
}

// race runs one racer process per role on ids at once and returns what
// each won.
func race(t *testing.T, db storetest.DB, ids []string, roles ...string) map[string][]string {
	t.Helper()
	start := time.Now().Add(2 * time.Second) // both processes are up by then
	cmds := map[string]*exec.Cmd{}
	outs := map[string]*strings.Builder{}
	for _, role := range roles {
		cmd := exec.CommandContext(t.Context(), os.Args[0])
		cmd.Env = append(os.Environ(), envRacerRole+"="+role, envRacerURI+"="+db.URI, envRacerDB+"="+db.Name,
			envRacerIDs+"="+strings.Join(ids, ","), envRacerStart+"="+strconv.FormatInt(start.UnixNano(), 10))
		outs[role] = &strings.Builder{}
		cmd.Stdout, cmd.Stderr = outs[role], os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[role] = cmd
	}
	won := map[string][]string{}
	for role, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("racer %s: %v", role, err)
		}
		var ids []string
		if err := json.Unmarshal([]byte(outs[role].String()), &ids); err != nil {
			t.Fatalf("racer %s printed %q: %v", role, outs[role], err)
		}
		won[role] = ids
	}
	return won
}

// TestTwoProcessesRaceCancelAgainstStart: an API process cancels the
// requests a worker process starts at the same instant, each with its own
// Store on the embedded store. Exactly one wins each request, and the
// stored status says which.
func TestTwoProcessesRaceCancelAgainstStart(t *testing.T) {
	db := storetest.Open(t)
	const n = 60
	ids := make([]string, n)
	for i := range ids {
		r := queued(t, "alice")
		mustInsert(t, db.Store, r)
		ids[i] = r.ID
	}
	won := race(t, db, ids, "cancel", "start")
	winner := map[string]string{}
	for role, list := range won {
		for _, id := range list {
			if other, ok := winner[id]; ok {
				t.Errorf("%s: both %s and %s won; stored %s", id, other, role, mustGet(t, db.Store, id).Status)
			}
			winner[id] = role
		}
	}
	for _, id := range ids {
		want := map[string]models.Status{"cancel": models.StatusCancelled, "start": models.StatusRunning}[winner[id]]
		if got := mustGet(t, db.Store, id).Status; winner[id] == "" || got != want {
			t.Errorf("%s: won by %q, stored %s", id, winner[id], got)
		}
	}
	t.Logf("cancel won %d, start won %d of %d", len(won["cancel"]), len(won["start"]), n)
}

// TestTwoProcessesRaceFinishAgainstALateAttempt: a zombie worker process
// records an attempt count just as the live one finishes the request: the
// finished request stays finished.
func TestTwoProcessesRaceFinishAgainstALateAttempt(t *testing.T) {
	db := storetest.Open(t)
	ctx := testContext(t)
	const n = 60
	ids := make([]string, n)
	for i := range ids {
		r := queued(t, "alice")
		mustInsert(t, db.Store, r)
		if _, err := db.Store.Requests.MarkRunning(ctx, r.ID, "", t0); err != nil {
			t.Fatal(err)
		}
		ids[i] = r.ID
	}
	race(t, db, ids, "finish", "attempt")
	for _, id := range ids {
		if got := mustGet(t, db.Store, id); got.Status != models.StatusSucceeded || got.Result != "done" {
			t.Errorf("%s: the finish was undone: status %s result %q attempts %d", id, got.Status, got.Result, got.Attempts)
		}
	}
}
