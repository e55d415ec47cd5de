// Package e2e owns Posthorn's end-to-end tests: the built posthorn binary,
// run as a child process, driven by independent SMTP clients (a raw TCP
// socket written byte by byte, swaks, Python's smtplib, Go's net/smtp) and
// read back by independent readers (the Maildir files themselves, Dovecot
// over IMAP). Every test checks what arrived in the mailboxes, not only the
// replies and exit codes.
//
// The package has no code outside its tests; this file exists for the
// package comment.
package e2e
