// Package devserver runs the embedded backing services used by
// `turnstile dev` and by end-to-end tests, all inside the current process:
//
//   - StartTemporal: a Temporal server (frontend, history, matching, worker;
//     one history shard) on SQLite, in a file or in memory, with the
//     namespace and the custom search attributes UserId (Keyword),
//     QueueLength (Int) and Paused (Bool) registered;
//   - StartUI: the Temporal Web UI (ui-server v2, assets embedded);
//   - StartMongo: FerretDB v1 with its SQLite handler, speaking the MongoDB
//     wire protocol, plus Mongo.IndexIDs, a workaround for FerretDB's
//     full-table scans on update by _id.
//
// Every server picks free ports when asked for port 0, and several can run
// in one process (as tests do): in-memory Temporal databases get unique
// names. Known process-wide leftovers after Stop are documented on
// Temporal.Stop.
// Only this package, cmd/ and tests/ should import it: it pulls in the
// Temporal server, whose cold build takes minutes.
package devserver
