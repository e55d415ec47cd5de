// Package crashtest owns the end-to-end durability test: it runs the real
// posthorn binary under a load of concurrent SMTP clients, kills it with
// SIGKILL at random moments, restarts it on the same data directory, and
// checks that every message acknowledged with 250 ends up in each Maildir
// exactly once and intact, and that nothing is delivered twice.
//
// The package has no code outside its test; this file carries the package
// documentation so that tools listing packages see a normal package.
package crashtest
