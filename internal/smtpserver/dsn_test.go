package smtpserver

import "testing"

// TestDSNParameters: RFC 3461 parameters are accepted and stored with the
// envelope — RET and ENVID (decoded from xtext) on MAIL, NOTIFY and ORCPT
// on RCPT — and malformed ones refused.
func TestDSNParameters(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	c.greet()
	c.send("MAIL FROM:<bob@example.org> RET=HDRS ENVID=QQ+2B314")
	c.expect("250 2.1.0 Ok")
	c.send("RCPT TO:<alice@example.com> NOTIFY=FAILURE,DELAY ORCPT=rfc822;alice+2Blists@example.com")
	c.expect("250 2.1.5 Ok")
	c.send("RCPT TO:<theboss@example.com> NOTIFY=NEVER")
	c.expect("250 2.1.5 Ok")
	c.send("RCPT TO:<theboss@example.com> NOTIFY=NEVER,SUCCESS")
	c.expect("501 5.5.4 Bad NOTIFY parameter")
	c.send("RCPT TO:<theboss@example.com> ORCPT=alice@example.com")
	c.expect("501 5.5.4 Bad ORCPT parameter")
	c.send("DATA")
	c.expect("354 {*}")
	c.send("Subject: dsn", "", ".")
	c.expect("250 2.0.0 Ok: queued as {id}")
	c.send("MAIL FROM:<bob@example.org> RET=SOME")
	c.expect("501 5.5.4 Bad RET parameter")
	c.send("MAIL FROM:<bob@example.org> ENVID=a+2")
	c.expect("501 5.5.4 Bad ENVID parameter")

	ms := ts.spool.messages()
	if len(ms) != 1 {
		t.Fatalf("%d messages, want 1", len(ms))
	}
	env := ms[0].env
	if env.Ret != "HDRS" || env.EnvID != "QQ+314" {
		t.Errorf("Ret %q EnvID %q, want HDRS and QQ+314", env.Ret, env.EnvID)
	}
	a, b := env.Recipients[0], env.Recipients[1]
	if a.Notify != "FAILURE,DELAY" || a.ORcpt != "rfc822;alice+lists@example.com" {
		t.Errorf("alice: Notify %q ORcpt %q", a.Notify, a.ORcpt)
	}
	if b.Notify != "NEVER" || b.Wants("FAILURE") {
		t.Errorf("theboss: Notify %q, wants failure notices: %v", b.Notify, b.Wants("FAILURE"))
	}
}
