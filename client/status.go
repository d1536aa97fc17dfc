package client

import (
	"strings"
)

// Status is a CLUSTER_STATUS reply: name=value fields in the server's
// order. PROTOCOL.md guarantees mode, state, node_id, nodes, nodes_up,
// shards and shards_with_leader, in that order; others may follow.
type Status struct {
	fields []StatusField
}

// StatusField is one name=value field of a Status.
type StatusField struct {
	Name, Value string
}

// Get returns the value of the named field, or "" if there is none.
func (s Status) Get(name string) string {
	v, _ := s.Lookup(name)
	return v
}

// Lookup returns the value of the named field and whether it is present.
func (s Status) Lookup(name string) (string, bool) {
	for _, f := range s.fields {
		if f.Name == name {
			return f.Value, true
		}
	}
	return "", false
}

// Fields returns every field in the server's order.
func (s Status) Fields() []StatusField {
	return append([]StatusField(nil), s.fields...)
}

func parseStatus(f [][]byte) (Status, error) {
	if err := replyError(f); err != nil {
		return Status{}, err
	}
	if len(f) < 1 || string(f[0]) != "CLUSTER_STATUS" {
		return Status{}, unexpected("CLUSTER_STATUS", f)
	}
	st := Status{fields: make([]StatusField, 0, len(f)-1)}
	for _, kv := range f[1:] {
		name, value, ok := strings.Cut(string(kv), "=")
		if !ok || name == "" {
			return Status{}, unexpected("CLUSTER_STATUS", f)
		}
		st.fields = append(st.fields, StatusField{Name: name, Value: value})
	}
	return st, nil
}
