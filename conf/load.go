package conf

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Override is a setting from outside the file, a command-line flag: Set
// applies it; Source and Key name it in error messages ("-listen",
// "server.listen").
type Override struct {
	Source, Key string
	Set         func(*Config)
}

// Load reads the TOML file at path over Default(), strictly, applies the
// overrides in order, and validates the result, so a value an override
// replaces is never checked. Error messages name the key and where its
// value came from (the file, or the override's source).
func Load(path string, overrides ...Override) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("load config: %w", err)
	}
	return Parse(data, path, overrides...)
}

// Parse is Load for a file already in memory; name is the file name used in
// error messages.
//
// Decoding happens in three passes so that every failure names its key:
// the TOML syntax is parsed into a generic map; that map is checked against
// the Config types (the TOML library's own type errors name Go types, not
// keys); only then is it decoded into the Config, whose metadata lists the
// keys no field took.
func Parse(data []byte, name string, overrides ...Override) (Config, error) {
	if name == "" {
		name = "config"
	}
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return Config{}, syntaxError(name, err)
	}
	var errs []keyError
	checkTypes(raw, reflect.TypeFor[Config](), "", &errs)
	if len(errs) > 0 {
		return Config{}, joinKeyErrors(name, errs)
	}

	c := Default()
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		// checkTypes accepts only what this decode accepts, so this is a
		// library behaviour we did not anticipate; still name the key.
		var pe toml.ParseError
		if errors.As(err, &pe) && pe.LastKey != "" {
			return Config{}, joinKeyErrors(name, []keyError{{pe.LastKey, pe.Message}})
		}
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	if errs := unknownKeys(md.Undecoded()); len(errs) > 0 {
		return Config{}, joinKeyErrors(name, errs)
	}
	// An empty array in the file means the same as no array.
	if len(c.Cluster.Join) == 0 {
		c.Cluster.Join = nil
	}
	if len(c.Cluster.Members) == 0 {
		c.Cluster.Members = nil
	}
	for _, o := range overrides {
		o.Set(&c)
	}
	if errs := c.validate(); len(errs) > 0 {
		var fromFile []keyError
		var fromOverrides []error
		for _, e := range errs {
			if i := slices.IndexFunc(overrides, func(o Override) bool { return o.Key == e.key }); i >= 0 {
				fromOverrides = append(fromOverrides, fmt.Errorf("%s (from %s): %s", e.key, overrides[i].Source, e.msg))
			} else {
				fromFile = append(fromFile, e)
			}
		}
		return Config{}, errors.Join(joinKeyErrors(name, fromFile), errors.Join(fromOverrides...))
	}
	return c, nil
}

// keyError is one problem with one key.
type keyError struct {
	key string // dotted TOML key, "storage.sync", "cluster.members[1].raft"
	msg string
}

// joinKeyErrors formats each problem as "file: key: message", one per line.
func joinKeyErrors(name string, errs []keyError) error {
	out := make([]error, len(errs))
	for i, e := range errs {
		if e.msg == "" {
			// Unknown keys carry the whole message in key position.
			out[i] = fmt.Errorf("%s: %s", name, e.key)
			continue
		}
		out[i] = fmt.Errorf("%s: %s: %s", name, e.key, e.msg)
	}
	return errors.Join(out...)
}

func syntaxError(name string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s:%d:%d: %s", name, pe.Position.Line, pe.Position.Col, pe.Message)
	}
	return fmt.Errorf("%s: %w", name, err)
}

// unknownKeys reports each undecoded key once: a whole unknown table is
// reported by its name, not by each key under it.
func unknownKeys(keys []toml.Key) []keyError {
	var errs []keyError
	var last string
	for _, k := range keys {
		s := k.String()
		if last != "" && strings.HasPrefix(s, last+".") {
			continue
		}
		last = s
		errs = append(errs, keyError{key: "unknown key " + s})
	}
	return errs
}

var tomlUnmarshaler = reflect.TypeFor[toml.Unmarshaler]()

// checkTypes compares the generic decoding of a TOML document with the Go
// type t it will be decoded into, recording a keyError for each value of
// the wrong TOML type. Keys that t does not define are left to
// MetaData.Undecoded.
func checkTypes(raw map[string]any, t reflect.Type, prefix string, errs *[]keyError) {
	for i := range t.NumField() {
		f := t.Field(i)
		name := f.Tag.Get("toml")
		v, ok := raw[name]
		if !ok {
			continue
		}
		checkValue(v, f.Type, prefix+name, errs)
	}
}

func checkValue(v any, t reflect.Type, key string, errs *[]keyError) {
	bad := func(want string) {
		*errs = append(*errs, keyError{key, fmt.Sprintf("want %s, got %s", want, tomlTypeName(v))})
	}
	if reflect.PointerTo(t).Implements(tomlUnmarshaler) {
		u := reflect.New(t).Interface().(toml.Unmarshaler)
		if err := u.UnmarshalTOML(v); err != nil {
			*errs = append(*errs, keyError{key, err.Error()})
		}
		return
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := v.(string); !ok {
			bad("a string")
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			bad("a boolean (true or false)")
		}
	case reflect.Int, reflect.Int64:
		if _, ok := v.(int64); !ok {
			bad("an integer")
		}
	case reflect.Uint64:
		n, ok := v.(int64)
		if !ok {
			bad("a non-negative integer")
		} else if n < 0 {
			*errs = append(*errs, keyError{key, fmt.Sprintf("must not be negative, got %d", n)})
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			bad("a table")
			return
		}
		checkTypes(m, t, key+".", errs)
	case reflect.Slice:
		elems, ok := arrayElems(v)
		if !ok {
			bad("an array")
			return
		}
		for i, e := range elems {
			checkValue(e, t.Elem(), fmt.Sprintf("%s[%d]", key, i), errs)
		}
	default:
		// Config has no other kinds; a new field of another kind needs a case here.
		*errs = append(*errs, keyError{key, fmt.Sprintf("conf cannot check values of Go type %s", t)})
	}
}

// arrayElems returns the elements of a TOML array, whether written inline
// ([]any) or as an array of tables ([]map[string]any).
func arrayElems(v any) ([]any, bool) {
	switch v := v.(type) {
	case []any:
		return v, true
	case []map[string]any:
		out := make([]any, len(v))
		for i, m := range v {
			out[i] = m
		}
		return out, true
	}
	return nil, false
}

// tomlTypeName names the TOML type of a decoded value, with the value for scalars.
func tomlTypeName(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("string %q", v)
	case int64:
		return fmt.Sprintf("integer %d", v)
	case float64:
		return fmt.Sprintf("float %v", v)
	case bool:
		return fmt.Sprintf("boolean %v", v)
	case time.Time:
		return "a datetime"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("a value of type %T", v)
}
