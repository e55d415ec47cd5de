// Package smtp owns the SMTP wire protocol shared by the server and (later)
// the client: reply codes and enhanced status codes as named constants, the
// one Error type, command and parameter parsing, the DATA dot reader and
// writer, and line-length limits.
package smtp

// Reply codes, RFC 5321 section 4.2.2/4.2.3.
const (
	CodeHelp                = 214
	CodeReady               = 220
	CodeClosing             = 221
	CodeOK                  = 250
	CodeCannotVerify        = 252
	CodeStartData           = 354
	CodeServiceNotAvailable = 421
	CodeMailboxBusy         = 450
	CodeLocalError          = 451
	CodeInsufficientStorage = 452
	CodeSyntaxError         = 500
	CodeParamSyntax         = 501
	CodeNotImplemented      = 502
	CodeBadSequence         = 503
	CodeParamNotImplemented = 504
	CodeMailboxUnavailable  = 550
	CodeUserNotLocal        = 551
	CodeExceededStorage     = 552
	CodeMailboxNotAllowed   = 553
	CodeTransactionFailed   = 554
	CodeParamsNotRecognized = 555
)

// Enhanced status codes, RFC 3463 (and RFC 5248's registry), as the
// "class.subject.detail" strings sent on the wire.
const (
	ESuccess           = "2.0.0"
	ESenderOK          = "2.1.0"
	EDestOK            = "2.1.5"
	EVrfyCannotVerify  = "2.5.0"
	EOtherTransient    = "4.0.0"
	ETempSystem        = "4.3.0"
	ETempTooManyRcpts  = "4.5.3"
	ETempPolicy        = "4.7.0"
	ETempNetwork       = "4.4.2"
	ETempMailboxFull   = "4.2.2"
	EBadDestMailbox    = "5.1.1"
	EBadDestSyntax     = "5.1.3"
	EBadSenderSyntax   = "5.1.7"
	EMsgTooBig         = "5.3.4"
	ELoopDetected      = "5.4.6"
	EInvalidCommand    = "5.5.1"
	ESyntaxError       = "5.5.2"
	EInvalidArgs       = "5.5.4"
	EOtherMedia        = "5.6.0"
	ENeedsSMTPUTF8     = "5.6.7"
	EConversionNeeded  = "5.6.3"
	EPolicy            = "5.7.0"
	ERelayDenied       = "5.7.1"
	EOtherPermanent    = "5.0.0"
	EOtherPermSystem   = "5.3.0"
	ETempMsgTooBigNow  = "4.3.4"
	ETempSystemFull    = "4.3.1"
	EServiceShutdown   = "4.3.2"
	ETempConnLimit     = "4.7.0"
	EPermProtocolError = "5.5.0"
)
