package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that what it accepts passes
// Validate unchanged (Parse leaves a config canonical), and that what it
// refuses is reported with the file and a line. The corpus in
// testdata/fuzz/FuzzParse is seeded further with the example file and every
// error case.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/errors/*.toml")
	seeds = append(seeds, "../../posthorn.example.toml")
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.toml")
		if err != nil {
			checkLocated(t, err)
			return
		}
		again, err := Parse(data, "fuzz.toml")
		if err != nil {
			t.Fatalf("second Parse failed: %v", err)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that Validate refuses: %v", err)
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("Validate changed a parsed config:\n%+v\n%+v", c, again)
		}
	})
}

// checkLocated fails unless every problem in err names the file and a line:
// everything that can be wrong in a file is written somewhere in it.
func checkLocated(t *testing.T, err error) {
	t.Helper()
	list := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	}
	for _, e := range list {
		var ce *Error
		if !errors.As(e, &ce) {
			if strings.HasPrefix(e.Error(), "... and ") {
				continue
			}
			t.Fatalf("error %q (%T) is not a *config.Error", e, e)
		}
		if ce.File != "fuzz.toml" || ce.Line <= 0 {
			t.Fatalf("error %q has file %q line %d; want fuzz.toml and a line", ce, ce.File, ce.Line)
		}
	}
}

// FuzzSizeDuration checks that ParseSize and ParseDuration never panic and
// that what they accept prints back (String) to text they read as the same
// value, which is what MarshalText relies on.
func FuzzSizeDuration(f *testing.F) {
	for _, s := range []string{"25MB", "1.5KiB", "1024", "5d", "1d12h", "1h30m", "-5m", "250ms"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if v, err := ParseSize(s); err == nil {
			if back, err := ParseSize(v.String()); err != nil || back != v {
				t.Fatalf("ParseSize(%q) = %d, but its String %q reads back as %d, %v", s, v, v.String(), back, err)
			}
		}
		if d, err := ParseDuration(s); err == nil {
			if back, err := ParseDuration(d.String()); err != nil || back != d {
				t.Fatalf("ParseDuration(%q) = %v, but its String reads back as %v, %v", s, d, back, err)
			}
		}
	})
}
