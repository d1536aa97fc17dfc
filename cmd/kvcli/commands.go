package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/kvstore/kv/client"
)

// command is one kvcli command: how it is called and what it does. Output
// goes to w; quote asks for values to be shown unambiguously (interactive
// use) instead of as raw bytes (scripts).
type command struct {
	name    string
	args    string // usage of the arguments
	help    string
	minArgs int
	maxArgs int // -1: unbounded
	run     func(ctx context.Context, c *client.Client, args []string, w io.Writer, quote bool) error
}

// usageError is a command typed wrongly; nothing was sent.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

var commands = []command{
	{"put", "key value", "store value under key", 2, 2, runPut},
	{"get", "key", "print the value of key", 1, 1, runGet},
	{"delete", "key", "delete key", 1, 1, runDelete},
	{"ping", "", "check the server answers", 0, 0, runPing},
	{"range", "start end [limit]", "list pairs with start <= key < end (end \"\" = no bound)", 2, 3, runRange},
	{"batch", "key value [key value ...]", "store several pairs atomically", 2, -1, runBatch},
	{"cluster", "status | nodes | leader [key] | shards | remove id | check", "cluster state, membership, leaders and replica consistency", 1, 2, runCluster},
	{"auth", "password", "authenticate: every connection uses password from now on", 1, 1, runAuth},
	{"raw", "FIELD [FIELD ...]", "send one pipe-protocol request as is, print the reply's fields as is", 1, -1, runRaw},
}

// lookup finds the command named by args[0] and checks its argument count.
func lookup(args []string) (*command, error) {
	if len(args) == 0 {
		return nil, &usageError{"no command"}
	}
	name := strings.ToLower(args[0])
	if name == "del" {
		name = "delete"
	}
	for i := range commands {
		cmd := &commands[i]
		if cmd.name != name {
			continue
		}
		n := len(args) - 1
		if n < cmd.minArgs || (cmd.maxArgs >= 0 && n > cmd.maxArgs) || (cmd.name == "batch" && n%2 != 0) {
			return nil, &usageError{strings.TrimSpace("usage: " + cmd.name + " " + cmd.args)}
		}
		switch cmd.name {
		case "range":
			if len(args) == 4 {
				if _, err := rangeLimit(args[3]); err != nil {
					return nil, err
				}
			}
		case "cluster":
			if err := checkCluster(args[1:]); err != nil {
				return nil, err
			}
		}
		return cmd, nil
	}
	return nil, &usageError{fmt.Sprintf("unknown command %q (try help)", args[0])}
}

// execute runs one command line. client.ErrNotFound is returned for a
// missing key, after nothing was printed.
func execute(ctx context.Context, c *client.Client, args []string, w io.Writer, quote bool) error {
	cmd, err := lookup(args)
	if err != nil {
		return err
	}
	return cmd.run(ctx, c, args[1:], w, quote)
}

// writeHelp lists the commands, and the prompt's own when prompt is set.
func writeHelp(w io.Writer, prompt bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.name, c.args, c.help)
	}
	if prompt {
		fmt.Fprintf(tw, "  help\tthis list\n  quit, exit\tleave\n")
		fmt.Fprintf(tw, "  \t(quote arguments with blanks: put \"my key\" 'a value')\n")
	}
	tw.Flush()
}

func runPut(ctx context.Context, c *client.Client, args []string, w io.Writer, _ bool) error {
	if err := c.Put(ctx, []byte(args[0]), []byte(args[1])); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "OK")
	return err
}

func runGet(ctx context.Context, c *client.Client, args []string, w io.Writer, quote bool) error {
	v, err := c.Get(ctx, []byte(args[0]))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, show(v, quote))
	return err
}

func runDelete(ctx context.Context, c *client.Client, args []string, w io.Writer, _ bool) error {
	if err := c.Delete(ctx, []byte(args[0])); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "OK")
	return err
}

func runPing(ctx context.Context, c *client.Client, _ []string, w io.Writer, _ bool) error {
	if err := c.Ping(ctx); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "PONG")
	return err
}

// runRange prints the pairs page by page: the server caps each reply at
// its range_limit, so a reply shorter than asked for does not mean the
// range is done, only an empty one does.
func runRange(ctx context.Context, c *client.Client, args []string, w io.Writer, quote bool) error {
	start, end := []byte(args[0]), []byte(args[1])
	limit := 0 // no limit: the whole range
	if len(args) == 3 {
		n, err := rangeLimit(args[2])
		if err != nil {
			return err
		}
		limit = n
	}
	printed := 0
	for limit == 0 || printed < limit {
		ask := 0
		if limit > 0 {
			ask = limit - printed
		}
		kvs, err := c.Range(ctx, start, end, ask)
		if err != nil {
			return err
		}
		if len(kvs) == 0 {
			break
		}
		for _, kv := range kvs {
			if _, err := fmt.Fprintf(w, "%s\t%s\n", show(kv.Key, quote), show(kv.Value, quote)); err != nil {
				return err
			}
		}
		printed += len(kvs)
		// The next page starts just after the last key.
		start = slices.Concat(kvs[len(kvs)-1].Key, []byte{0})
	}
	if printed == 0 && quote {
		_, err := fmt.Fprintln(w, "(empty)")
		return err
	}
	return nil
}

// rangeLimit parses the limit argument of range.
func rangeLimit(arg string) (int, error) {
	n, err := strconv.Atoi(arg)
	if err != nil || n <= 0 {
		return 0, &usageError{fmt.Sprintf("range: limit must be a positive integer, got %q", arg)}
	}
	return n, nil
}

func runBatch(ctx context.Context, c *client.Client, args []string, w io.Writer, _ bool) error {
	kvs := make([]client.KV, len(args)/2)
	for i := range kvs {
		kvs[i] = client.KV{Key: []byte(args[2*i]), Value: []byte(args[2*i+1])}
	}
	if err := c.Batch(ctx, kvs); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "OK (%d pairs)\n", len(kvs))
	return err
}

func checkCluster(args []string) error {
	switch strings.ToLower(args[0]) {
	case "status", "nodes", "shards", "check":
		if len(args) == 1 {
			return nil
		}
	case "leader":
		return nil
	case "remove":
		if len(args) == 2 {
			_, err := nodeID(args[1])
			return err
		}
	}
	return &usageError{"usage: cluster status | nodes | leader [key] | shards | remove id | check"}
}

// nodeID parses the node id argument of cluster remove; node ids start at 1.
func nodeID(arg string) (uint64, error) {
	id, err := strconv.ParseUint(arg, 10, 64)
	if err != nil || id == 0 {
		return 0, &usageError{fmt.Sprintf("cluster remove: node id must be a positive integer, got %q", arg)}
	}
	return id, nil
}

func runCluster(ctx context.Context, c *client.Client, args []string, w io.Writer, quote bool) error {
	switch strings.ToLower(args[0]) {
	case "status":
		st, err := c.ClusterStatus(ctx)
		if err != nil {
			return err
		}
		for _, f := range st.Fields() {
			if _, err := fmt.Fprintf(w, "%s: %s\n", f.Name, f.Value); err != nil {
				return err
			}
		}
		return nil
	case "nodes":
		nodes, err := c.ClusterNodes(ctx)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if _, err := fmt.Fprintln(w, n); err != nil {
				return err
			}
		}
		return nil
	case "check":
		shards, err := c.ClusterCheck(ctx)
		if err != nil {
			return err
		}
		consistent := 0
		for _, sh := range shards {
			if strings.Contains(sh, ",state=consistent,") {
				consistent++
			}
			if _, err := fmt.Fprintln(w, sh); err != nil {
				return err
			}
		}
		if consistent < len(shards) {
			return fmt.Errorf("%d of %d shards not shown consistent", len(shards)-consistent, len(shards))
		}
		return nil
	case "leader":
		var key []byte
		if len(args) == 2 {
			key = []byte(args[1])
		}
		leader, err := c.ClusterLeader(ctx, key)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, leader)
		return err
	case "shards":
		// Where each shard's writes go: what client.Cluster routes by.
		leaders, err := c.ShardLeaders(ctx)
		if err != nil {
			return err
		}
		for i, l := range leaders {
			if l == "" {
				l = "none"
			}
			if _, err := fmt.Fprintf(w, "shard=%d,leader=%s\n", i+1, l); err != nil {
				return err
			}
		}
		return nil
	case "remove":
		id, err := nodeID(args[1])
		if err != nil {
			return err
		}
		if err := c.ClusterRemove(ctx, id); err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, "OK")
		return err
	}
	return checkCluster(args)
}

// runAuth authenticates through Client.Auth rather than a raw AUTH, which
// would authenticate one pooled connection and be lost when it is redialed.
func runAuth(ctx context.Context, c *client.Client, args []string, w io.Writer, _ bool) error {
	if err := c.Auth(ctx, args[0]); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "OK")
	return err
}

// runRaw prints the reply's fields whatever they are. It does not know what
// a reply means to the command it sent, so NOT_FOUND is printed like any
// other reply and kvcli exits 0 (get, which does know, exits 1); only an
// ERROR reply, which means the same for every command, is an error (exit 2).
func runRaw(ctx context.Context, c *client.Client, args []string, w io.Writer, quote bool) error {
	fields := make([][]byte, len(args))
	for i, a := range args {
		fields[i] = []byte(a)
	}
	reply, err := c.Do(ctx, fields...)
	if err != nil {
		return err
	}
	for i, f := range reply {
		var err error
		if quote {
			_, err = fmt.Fprintf(w, "%d) %s\n", i+1, show(f, true))
		} else {
			_, err = fmt.Fprintf(w, "%s\n", f)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// show renders a key or value. Scripts get the bytes as they are. At the
// prompt, what show prints can be typed back as one argument that is the
// same bytes (TestShowReadsBack): text that splitArgs reads as it is (only
// printable runes, no blank or quote) is shown bare; anything else
// double-quoted, so that "", " " and "\x00" can be told apart.
func show(b []byte, quote bool) string {
	if !quote {
		return string(b)
	}
	if bare(b) {
		return string(b)
	}
	return quoteArg(b)
}

// bare reports whether b can be shown as it is: splitArgs takes blanks
// and quotes outside quotes as syntax, and a terminal would act on
// control characters.
func bare(b []byte) bool {
	if len(b) == 0 || !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !strconv.IsPrint(r) || r == ' ' || r == '"' || r == '\'' {
			return false
		}
	}
	return true
}

// quoteArg double-quotes b with only the escapes splitArgs reads: \" \\
// \n \r \t, and \xHH for every other byte that is not part of a printable
// rune (control characters, invalid UTF-8, and the bytes of non-printable
// runes such as U+00A0 or U+202E). strconv.Quote would also write \a \b
// \f \v and \u, which the prompt does not read.
func quoteArg(b []byte) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		switch {
		case r == '"' || r == '\\':
			sb.WriteByte('\\')
			sb.WriteRune(r)
		case r == '\n':
			sb.WriteString(`\n`)
		case r == '\r':
			sb.WriteString(`\r`)
		case r == '\t':
			sb.WriteString(`\t`)
		case r == utf8.RuneError && n == 1, !strconv.IsPrint(r):
			for _, c := range b[:n] {
				fmt.Fprintf(&sb, `\x%02x`, c)
			}
		default:
			sb.Write(b[:n])
		}
		b = b[n:]
	}
	sb.WriteByte('"')
	return sb.String()
}

// describe turns an error into the line shown at the prompt.
func describe(err error) string {
	var se *client.ServerError
	var ue *usageError
	var nc *notConnectedError
	switch {
	case errors.As(err, &nc):
		// Before the server's message, which alone (invalid password)
		// would not say that the prompt is still not connected.
		return "(error) " + nc.Error()
	case errors.Is(err, client.ErrNotFound):
		return "(not found)"
	case errors.As(err, &se):
		return "(error) " + se.Msg
	case errors.As(err, &ue):
		return "(usage) " + ue.msg
	}
	return "(error) " + err.Error()
}
