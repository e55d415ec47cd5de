package config

import (
	"fmt"
	"math/big"
	"strings"
)

// Size is a number of bytes. In TOML it is either an integer (bytes) or a
// string with a unit, such as "25MB" or "25MiB", because nobody should have to
// multiply 25 by 1048576 in their head to read a configuration file.
type Size int64

// sizeUnits lists the accepted units with their factors. The decimal units
// are powers of 1000 and the binary ones powers of 1024, as the SI and IEC
// define them: an administrator who writes "MB" gets what the disk vendor
// means, and one who writes "MiB" gets what the kernel means.
var sizeUnits = []struct {
	name   string
	factor int64
}{
	{"", 1},
	{"b", 1},
	{"kb", 1000},
	{"mb", 1000 * 1000},
	{"gb", 1000 * 1000 * 1000},
	{"kib", 1 << 10},
	{"mib", 1 << 20},
	{"gib", 1 << 30},
}

// sizeHint is appended to every size parse error, so the administrator sees
// the accepted forms at the place they went wrong.
const sizeHint = "(use bytes or a unit: KB, MB, GB, KiB, MiB, GiB)"

// ParseSize parses a size such as "1024", "512B", "25MB", "1.5GiB" or
// "10 KiB". Units are case-insensitive; a fraction is allowed only when the
// result is a whole number of bytes.
func ParseSize(s string) (Size, error) {
	bad := func() (Size, error) {
		return 0, fmt.Errorf("invalid size %q %s", s, sizeHint)
	}
	t := strings.TrimSpace(s)
	// Split "1.5 MiB" into the number and the unit by scanning the digits,
	// rather than trusting a general number parser that would also take
	// "1e6", "0x10" or "1/3".
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return bad()
	}
	if i < len(t) && t[i] == '.' {
		j := i + 1
		for j < len(t) && t[j] >= '0' && t[j] <= '9' {
			j++
		}
		if j == i+1 {
			return bad()
		}
		i = j
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	factor := int64(-1)
	for _, u := range sizeUnits {
		if u.name == unit {
			factor = u.factor
			break
		}
	}
	if factor < 0 {
		return bad()
	}
	// big.Rat keeps "1.5GiB" exact; float64 would round large sizes.
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return bad()
	}
	r.Mul(r, new(big.Rat).SetInt64(factor))
	if !r.IsInt() {
		return 0, fmt.Errorf("invalid size %q: not a whole number of bytes", s)
	}
	n := r.Num()
	if !n.IsInt64() {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return Size(n.Int64()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler, which go-toml calls for
// TOML strings; TOML integers are stored directly as bytes.
func (s *Size) UnmarshalText(text []byte) error {
	v, err := ParseSize(string(text))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText implements encoding.TextMarshaler with the same form String
// returns, so a marshalled configuration parses back to the same value.
func (s Size) MarshalText() ([]byte, error) {
	return []byte(s.String()), nil
}

// String formats s with the largest binary unit that divides it exactly
// ("25MiB"), else as plain bytes ("1000"), so that the value is exact and
// parses back with ParseSize.
func (s Size) String() string {
	for _, u := range []struct {
		name   string
		factor int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s > 0 && int64(s)%u.factor == 0 {
			return fmt.Sprintf("%d%s", int64(s)/u.factor, u.name)
		}
	}
	return fmt.Sprintf("%d", int64(s))
}
