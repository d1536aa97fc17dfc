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
		rl, err := readline.NewEx(&readline.Config{
			Prompt:            addr + "> ",
			HistoryFile:       historyFile(),
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

// historyFile is ~/.kvcli_history, or "" (no history) without a home.
func historyFile() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".kvcli_history")
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
