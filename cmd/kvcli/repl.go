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

// interactive runs the prompt until quit, exit or end of input.
func interactive(c *client.Client, addr string, stdin io.Reader, stdout, stderr io.Writer) int {
	var lr lineReader
	if f, ok := stdin.(*os.File); ok && readline.IsTerminal(int(f.Fd())) {
		history, err := historyFile()
		if err != nil {
			fmt.Fprintf(stderr, "kvcli: no history: %v\n", err)
		}
		rl, err := newReadline(&readline.Config{
			Prompt:            addr + "> ",
			HistoryFile:       history,
			HistorySearchFold: true,
			AutoComplete:      completer(),
			InterruptPrompt:   "^C",
			EOFPrompt:         "quit",
			Stdin:             f,
			Stdout:            stdout,
			Stderr:            stderr,
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
	if err := repl(context.Background(), c, lr, stdout); err != nil {
		fmt.Fprintf(stderr, "kvcli: %v\n", err)
		return exitError
	}
	return exitOK
}

// maxInputLine bounds one line of piped input.
const maxInputLine = 128 << 20

// repl reads commands and prints replies until quit, exit, end of input,
// or ^C on an empty line. Errors of commands are printed and the prompt
// goes on; an error reading the input ends it and is returned.
func repl(ctx context.Context, c *client.Client, lr lineReader, w io.Writer) error {
	for {
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
		if err := execute(ctx, c, args, w, true); err != nil {
			fmt.Fprintln(w, describe(err))
		}
	}
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
				readline.PcItem("leader"), readline.PcItem("remove")))
			continue
		}
		items = append(items, readline.PcItem(c.name))
	}
	return readline.NewPrefixCompleter(items...)
}
