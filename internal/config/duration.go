package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time span written in TOML as a string in Go's syntax ("30s",
// "5m", "1h30m") or with a leading count of days ("5d", "1d12h"). Days exist
// because queue lifetimes are naturally given in days and "120h" hides that.
type Duration time.Duration

// durationHint is appended to every duration parse error.
const durationHint = `(use a number and a unit: "30s", "5m", "1h30m", "5d")`

// ParseDuration parses s as time.ParseDuration does, but also accepts a
// whole number of days before the rest: "5d", "1d12h". A day is 24 hours
// here; configuration durations do not care about daylight saving.
func ParseDuration(s string) (Duration, error) {
	bad := func() (Duration, error) {
		return 0, fmt.Errorf("invalid duration %q %s", s, durationHint)
	}
	t := s
	neg := false
	if strings.HasPrefix(t, "-") || strings.HasPrefix(t, "+") {
		neg = t[0] == '-'
		t = t[1:]
	}
	var days time.Duration
	hasDays := false
	// No Go duration unit contains a 'd', so the first 'd' can only end a
	// day count.
	if i := strings.IndexByte(t, 'd'); i >= 0 {
		n, err := strconv.ParseUint(t[:i], 10, 64)
		if err != nil { // also refuses "", signs, "1.5" and "0x5"
			return bad()
		}
		const maxDays = uint64(math.MaxInt64 / int64(24*time.Hour))
		if n > maxDays {
			return 0, fmt.Errorf("invalid duration %q: too large", s)
		}
		days = time.Duration(n) * 24 * time.Hour
		t = t[i+1:]
		hasDays = true
	}
	var rest time.Duration
	if t != "" {
		// A sign inside the rest ("1d-5h") would let one value count up and
		// down at once; refuse it rather than guess.
		if t[0] == '-' || t[0] == '+' {
			return bad()
		}
		var err error
		rest, err = time.ParseDuration(t)
		if err != nil {
			return bad()
		}
	} else if !hasDays {
		return bad() // empty, or a bare sign
	}
	if rest > math.MaxInt64-days {
		return 0, fmt.Errorf("invalid duration %q: too large", s)
	}
	d := days + rest
	if neg {
		d = -d
	}
	return Duration(d), nil
}

// D returns d as a time.Duration, for passing to the standard library.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d as time.Duration does ("1h30m0s"), which ParseDuration
// reads back.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalText implements encoding.TextUnmarshaler, which go-toml calls for
// TOML strings.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := ParseDuration(string(text))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalText implements encoding.TextMarshaler with String's form.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}
