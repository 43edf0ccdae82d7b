// Package faults is Turnstile's fault-injection suite. It runs Temporal, the
// MongoDB-compatible store, the API and workers as separate OS processes of
// the real turnstile binary, kills, freezes and restarts them while users
// submit work, and checks the history the clients and a recording downstream
// saw: nothing accepted is lost, nothing takes effect twice, no request
// overtakes an earlier one of its user, and no two of one user's requests
// execute at once.
//
// Everything lives in the _test.go files; docs/faults.md describes the fault
// model, the checker's rules and how to run it (make test-faults).
package faults
