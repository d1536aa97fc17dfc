package conf

import (
	"fmt"
	"time"
)

// Duration is a time.Duration written in TOML as a Go duration string:
// "100ms", "5s", "1m30s". The integer 0 and the string "0" both mean zero;
// other bare integers are rejected because their unit would be a guess.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d as time.Duration does ("100ms", "5s").
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalTOML accepts a duration string or the integer 0.
func (d *Duration) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		return d.UnmarshalText([]byte(v))
	case int64:
		if v != 0 {
			return fmt.Errorf("invalid duration %d: write it as a string with a unit, like \"%ds\"", v, v)
		}
		*d = 0
		return nil
	default:
		return fmt.Errorf("want a duration string like \"5s\", got %s", tomlTypeName(v))
	}
}

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("invalid duration %q: want a Go duration like \"100ms\" or \"5s\"", text)
	}
	*d = Duration(v)
	return nil
}

// MarshalText formats d as String does.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}
