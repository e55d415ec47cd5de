package smtp

import "testing"

func TestXtext(t *testing.T) {
	for _, tt := range []struct {
		in, out string
		ok      bool
	}{
		{"abc", "abc", true},
		{"a+2Bb", "a+b", true},
		{"a+3Db", "a=b", true},
		{"+20", " ", true},
		{"a+2b", "", false}, // lower-case hex is not xtext
		{"a+2", "", false},
		{"a=b", "", false},
		{"a b", "", false},
		{"", "", true},
	} {
		got, ok := DecodeXtext(tt.in)
		if ok != tt.ok || got != tt.out {
			t.Errorf("DecodeXtext(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.out, tt.ok)
		}
	}
	for _, s := range []string{"alice+tag@example.com", "a=b c", "jörg@exämple.org", ""} {
		if got, ok := DecodeXtext(EncodeXtext(s)); !ok || got != s {
			t.Errorf("round trip of %q: %q, %v", s, got, ok)
		}
	}
}

func TestParseNotify(t *testing.T) {
	for in, want := range map[string]string{
		"NEVER": "NEVER", "never": "NEVER", "SUCCESS,FAILURE": "SUCCESS,FAILURE", "delay": "DELAY",
		"NEVER,FAILURE": "", "FAILURE,FAILURE": "", "": "", "SOMETIMES": "",
	} {
		got, ok := ParseNotify(in)
		if (want == "") == ok || got != want {
			t.Errorf("ParseNotify(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestParseORCPT(t *testing.T) {
	for in, want := range map[string]string{
		"rfc822;alice+2Btag@example.com": "rfc822;alice+tag@example.com",
		"RFC822;bob@example.org":         "rfc822;bob@example.org",
		"utf-8;j+C3+B6rg@example.org":    "utf-8;j\xc3\xb6rg@example.org",
		"rfc822;":                        "",
		"alice@example.com":              "",
		";x@y":                           "",
	} {
		got, ok := ParseORCPT(in)
		if (want == "") == ok || got != want {
			t.Errorf("ParseORCPT(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}
