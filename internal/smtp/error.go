package smtp

import (
	"fmt"
)

// Error is an SMTP reply that reports a failure: the reply code, the enhanced
// status code, a message that is safe to send to the peer (never a path, a
// config value or an internal error text), and the wrapped cause for logs.
type Error struct {
	Code     int
	Enhanced string
	Message  string
	Err      error
}

// Errorf returns an *Error with a formatted safe message and no cause.
func Errorf(code int, enhanced, format string, args ...any) *Error {
	return &Error{Code: code, Enhanced: enhanced, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns a copy of e that carries cause for logging; the wire text is unchanged.
func (e *Error) Wrap(cause error) *Error {
	c := *e
	c.Err = cause
	return &c
}

// Error formats the reply as it would appear on the wire, plus the cause.
func (e *Error) Error() string {
	s := fmt.Sprintf("%d %s %s", e.Code, e.Enhanced, e.Message)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether the failure is transient (a 4xx reply).
func (e *Error) Temporary() bool { return e.Code >= 400 && e.Code < 500 }
