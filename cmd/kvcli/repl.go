package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/chzyer/readline"

	"github.com/kvstore/kv/client"
)

// lineReader is where the prompt's lines come from: readline on a
// terminal, plain lines otherwise (kvcli < script.txt).
type lineReader interface {
	Readline() (string, error)
}

// session is the prompt's client. Like redis-cli's prompt, it starts
// whether or not the server answers, and every command connects until one
// succeeds, so a user can wait for a server to come up. Once connected,
// the client reconnects by itself.
type session struct {
	addr string
	opts client.Options // opts.Password: the latest from -a, KVCLI_AUTH or auth
	c    *client.Client // nil until connected
}

// notConnectedError is a failure to connect; nothing was sent.
type notConnectedError struct{ err error }

func (e *notConnectedError) Error() string { return "not connected: " + e.err.Error() }
func (e *notConnectedError) Unwrap() error { return e.err }

// connect returns the session's client, dialing the server first if there
// is none yet.
func (s *session) connect() (*client.Client, error) {
	if s.c == nil {
		c, err := client.Dial(s.addr, s.opts)
		if err != nil {
			return nil, &notConnectedError{err}
		}
		s.c = c
	}
	return s.c, nil
}

func (s *session) close() {
	if s.c != nil {
		s.c.Close()
	}
}

// prompt is what the prompt shows: the server's address once connected,
// as redis-cli does.
func (s *session) prompt() string {
	if s.c == nil {
		return "not connected> "
	}
	return s.addr + "> "
}

// interactive runs the prompt until quit, exit or end of input.
func interactive(s *session, stdin io.Reader, stdout, stderr io.Writer) int {
	if _, err := s.connect(); err != nil {
		fmt.Fprintf(stderr, "kvcli: %v\nkvcli: each command will try to connect again\n", err)
	}
	var lr lineReader
	if f, ok := stdin.(*os.File); ok && readline.IsTerminal(int(f.Fd())) {
		history, err := historyFile()
		if err != nil {
			fmt.Fprintf(stderr, "kvcli: no history: %v\n", err)
		}
		rl, err := newReadline(&readline.Config{
			Prompt:                 s.prompt(),
			HistoryFile:            history,
			HistorySearchFold:      true,
			DisableAutoSaveHistory: true, // repl saves all but passwords
			AutoComplete:           completer(),
			InterruptPrompt:        "^C",
			EOFPrompt:              "quit",
			Stdin:                  f,
			Stdout:                 stdout,
			Stderr:                 stderr,
		})
		if err != nil {
			fmt.Fprintf(stderr, "kvcli: %v\n", err)
			return exitError
		}
		defer rl.Close()
		lr = rl
	} else {
		sc := bufio.NewScanner(stdin)
		// A line may carry a value up to the server's frame limit (32 MiB
		// by default), quoted and escaped.
		sc.Buffer(make([]byte, 64<<10), maxInputLine)
		lr = &plainLines{sc: sc}
	}
	if err := repl(context.Background(), s, lr, stdout); err != nil {
		fmt.Fprintf(stderr, "kvcli: %v\n", err)
		return exitError
	}
	return exitOK
}

// holdsPassword reports whether line sends a password (auth PASSWORD, raw
// AUTH ...), which the history file must not keep, as redis-cli keeps no
// AUTH lines. The words are read as the prompt reads them, quotes and all:
// "auth" and raw 'AUTH' send a password too.
func holdsPassword(line string) bool {
	f, err := splitArgs(line)
	if err != nil {
		// Not run, but perhaps a password typed with a stray quote: judge
		// the words with their quotes dropped.
		f = strings.Fields(strings.NewReplacer(`"`, "", `'`, "").Replace(line))
	}
	return len(f) > 0 && (strings.EqualFold(f[0], "auth") ||
		(len(f) > 1 && strings.EqualFold(f[0], "raw") && strings.HasPrefix(strings.ToUpper(f[1]), "AUTH")))
}

// maxInputLine bounds one line of piped input.
const maxInputLine = 128 << 20

// repl reads commands and prints replies until quit, exit, end of input,
// or ^C on an empty line. Errors of commands are printed and the prompt
// goes on; an error reading the input or writing the output ends it and
// is returned.
func repl(ctx context.Context, s *session, lr lineReader, out io.Writer) error {
	w := &stickyWriter{w: out}
	for {
		if w.err != nil {
			// The replies go nowhere (a full disk, a closed pipe): stop,
			// rather than run the rest of a script unseen and exit 0.
			return fmt.Errorf("write output: %w", w.err)
		}
		if p, ok := lr.(interface{ SetPrompt(string) }); ok {
			p.SetPrompt(s.prompt())
		}
		line, err := lr.Readline()
		if errors.Is(err, readline.ErrInterrupt) {
			if line == "" {
				return nil
			}
			continue // ^C abandons the line being typed
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read input: %w", err)
		}
		if h, ok := lr.(interface{ SaveHistory(string) error }); ok && !holdsPassword(line) {
			_ = h.SaveHistory(line)
		}
		args, err := splitArgs(line)
		if err != nil {
			fmt.Fprintf(w, "(usage) %v\n", err)
			continue
		}
		if len(args) == 0 {
			continue
		}
		switch strings.ToLower(args[0]) {
		case "quit", "exit":
			return nil
		case "help", "?":
			writeHelp(w, true)
			continue
		}
		if err := s.execute(ctx, args, w); err != nil {
			fmt.Fprintln(w, describe(err))
		}
	}
}

// execute runs one command of the prompt, connecting first if need be.
func (s *session) execute(ctx context.Context, args []string, w io.Writer) error {
	cmd, err := lookup(args)
	if err != nil {
		return err // a usage error needs no server
	}
	if cmd.name == "auth" && s.c == nil {
		// The password is for the connection about to be made (connecting
		// checks it) and every later one; the one given before, if any,
		// may be what kept the prompt from connecting.
		s.opts.Password = args[1]
	}
	c, err := s.connect()
	if err != nil {
		return err
	}
	return cmd.run(ctx, c, args[1:], w, true)
}

// stickyWriter remembers the first error of its writes; commands report
// their own write errors, but only as one more line to write.
type stickyWriter struct {
	w   io.Writer
	err error
}

func (s *stickyWriter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(p)
	s.err = err
	return n, err
}

// plainLines reads lines without a prompt or editing.
type plainLines struct{ sc *bufio.Scanner }

func (p *plainLines) Readline() (string, error) {
	if p.sc.Scan() {
		return p.sc.Text(), nil
	}
	if err := p.sc.Err(); err != nil {
		return "", err
	}
	return "", io.EOF
}

// historyFile is ~/.kvcli_history, readable by its owner only, or ""
// (no history) without a home or when it cannot be made so.
func historyFile() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", nil
	}
	path := filepath.Join(home, ".kvcli_history")
	if err := ownerOnly(path); err != nil {
		return "", err
	}
	return path, nil
}

// ownerOnly creates path if it is missing and makes it readable and
// writable by its owner only, as redis-cli does its history: anything
// typed at the prompt is kept there, `raw AUTH password` included.
// readline would create it 0666 less the umask, and older kvcli did.
func ownerOnly(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err // names the operation and the file
	}
	defer f.Close()
	return f.Chmod(0o600)
}

// newReadline is readline.NewEx keeping the history file owner-only:
// readline trims a history over its limit when it starts by writing a new
// file (mode 0666 less the umask) and renaming it over the old one.
func newReadline(cfg *readline.Config) (*readline.Instance, error) {
	rl, err := readline.NewEx(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.HistoryFile != "" {
		if err := ownerOnly(cfg.HistoryFile); err != nil {
			rl.Close()
			return nil, fmt.Errorf("history: %w", err)
		}
	}
	return rl, nil
}

func completer() readline.AutoCompleter {
	items := []readline.PrefixCompleterInterface{
		readline.PcItem("help"), readline.PcItem("quit"), readline.PcItem("exit"),
	}
	for _, c := range commands {
		if c.name == "cluster" {
			items = append(items, readline.PcItem("cluster",
				readline.PcItem("status"), readline.PcItem("nodes"),
				readline.PcItem("leader"), readline.PcItem("remove"), readline.PcItem("check")))
			continue
		}
		items = append(items, readline.PcItem(c.name))
	}
	return readline.NewPrefixCompleter(items...)
}
