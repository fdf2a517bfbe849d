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
	"sync"

	"github.com/chzyer/readline"
	"golang.org/x/term"
)

// errInterrupt is a lineReader's error for Ctrl-C typed at the prompt:
// the line typed so far is dropped.
var errInterrupt = errors.New("interrupted")

// lineReader reads the lines of a chat: a line editor on a terminal,
// plain lines from a pipe or a file.
type lineReader interface {
	// ReadLine returns the next line without its newline. It fails with
	// errInterrupt for Ctrl-C, io.EOF at the end of input (Ctrl-D on an
	// empty line), and ctx's error when ctx is done first.
	ReadLine(ctx context.Context) (string, error)
	// SetPrompt sets the prompt of the next line.
	SetPrompt(prompt string)
	// Interactive reports whether the lines come from a terminal.
	Interactive() bool
	Close() error
}

// Prompts of the line editor, as ollama's: the first line of a message,
// and the lines after the first of a """ block.
const (
	promptFirst = ">>> "
	promptMore  = "... "
)

// historyLimit bounds the line editor's history, in memory and in its
// file (the file is cut back to this many lines when it is next read).
const historyLimit = 1000

// newLineReader returns a line editor when in is a terminal, otherwise a
// reader of plain lines. Prompts and echo go to echo (see chatOutput).
func newLineReader(in io.Reader, echo io.Writer) (lineReader, error) {
	f, ok := in.(*os.File)
	if !ok || !isTerminal(in) {
		return newPipeLines(in), nil
	}
	return newEditor(f, echo)
}

// chatOutput returns where the chat writes what is not a reply (prompts,
// the echo of what is typed, command output, errors): stderr, unless only
// stdout is a terminal, so that "m40llm chat 2>log" still shows them.
func chatOutput(stdout, stderr io.Writer) io.Writer {
	if !isTerminalWriter(stderr) && isTerminalWriter(stdout) {
		return stdout
	}
	return stderr
}

// isTerminalWriter says whether w is a terminal.
func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// editor is the terminal's line editor (github.com/chzyer/readline): line
// editing, history (Up and Down, Ctrl-R), Ctrl-C and Ctrl-D.
type editor struct {
	rl        *readline.Instance
	stdin     *readline.CancelableStdin
	closeOnce sync.Once
	closeErr  error
}

func newEditor(f *os.File, echo io.Writer) (*editor, error) {
	fd := int(f.Fd())
	var (
		mu    sync.Mutex
		saved *readline.State
	)
	stdin := readline.NewCancelableStdin(f)
	rl, err := readline.NewEx(&readline.Config{
		Prompt:          promptFirst,
		HistoryFile:     historyFile(),
		HistoryLimit:    historyLimit,
		AutoComplete:    chatCompleter(),
		InterruptPrompt: "^C",
		EOFPrompt:       "\n", // readline's way of saying: print nothing more
		Stdin:           stdin,
		Stdout:          echo,
		Stderr:          echo,
		FuncIsTerminal:  func() bool { return true },
		// The terminal is raw only while a line is edited: during a reply
		// Ctrl-C is the terminal's SIGINT, which stops the reply.
		FuncMakeRaw: func() error {
			mu.Lock()
			defer mu.Unlock()
			st, err := readline.MakeRaw(fd)
			if err == nil {
				saved = st
			}
			return err
		},
		FuncExitRaw: func() error {
			mu.Lock()
			defer mu.Unlock()
			if saved == nil {
				return nil
			}
			err := readline.Restore(fd, saved)
			saved = nil
			return err
		},
		FuncGetWidth: func() int { return readline.GetScreenWidth() },
	})
	if err != nil {
		return nil, fmt.Errorf("starting the line editor: %w", err)
	}
	return &editor{rl: rl, stdin: stdin}, nil
}

func (e *editor) ReadLine(ctx context.Context) (string, error) {
	// A done ctx (SIGTERM) closes stdin, which ends Readline with io.EOF;
	// Close, called by the chat when it ends, restores the terminal.
	// (readline's Close itself must not run here: it waits for the
	// goroutine that reads stdin, which this goroutine never synchronized
	// with, and the race detector rightly says so.)
	defer context.AfterFunc(ctx, func() { e.stdin.Close() })()
	line, err := e.rl.Readline()
	if ctx.Err() != nil { // a line readline ended early is not sent
		return "", ctx.Err()
	}
	if errors.Is(err, readline.ErrInterrupt) {
		return "", errInterrupt
	}
	return line, err
}

func (e *editor) SetPrompt(p string) { e.rl.SetPrompt(p) }
func (e *editor) Interactive() bool  { return true }

// Close ends a Readline in progress (with io.EOF) and restores the
// terminal.
func (e *editor) Close() error {
	e.closeOnce.Do(func() {
		// readline closes the buffer it wraps around stdin, not stdin:
		// its reader would stay blocked, and rl.Close waits for it.
		e.stdin.Close()
		e.closeErr = e.rl.Close()
	})
	return e.closeErr
}

// historyFile returns the line editor's history file,
// $XDG_CACHE_HOME/m40llm/chat_history (os.UserCacheDir), created private
// (mode 0600: it holds what was typed), or "" for history in memory only
// when there is no cache directory or it cannot be written.
func historyFile() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	dir = filepath.Join(dir, "m40llm")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return ""
	}
	path := filepath.Join(dir, "chat_history")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return ""
	}
	f.Close()
	return path
}

// chatCompleter completes the chat's commands on Tab.
func chatCompleter() readline.AutoCompleter {
	var items []readline.PrefixCompleterInterface
	for _, c := range chatCommands {
		switch {
		case strings.Contains(c.name, " "): // a form of /set
		case c.name == "/set":
			var sub []readline.PrefixCompleterInterface
			for _, p := range chatParams {
				sub = append(sub, readline.PcItem(p.name))
			}
			sub = append(sub, readline.PcItem("system"), readline.PcItem("verbose"), readline.PcItem("quiet"))
			items = append(items, readline.PcItem(c.name, sub...))
		case c.name == "/show":
			items = append(items, readline.PcItem(c.name, readline.PcItem("info"), readline.PcItem("parameters"),
				readline.PcItem("system"), readline.PcItem("template")))
		default:
			for _, n := range append([]string{c.name}, c.aliases...) {
				items = append(items, readline.PcItem(n))
			}
		}
	}
	return readline.NewPrefixCompleter(items...)
}

// pipeLines reads plain lines (no prompt, no echo) from a pipe or a file;
// a goroutine reads ahead so that a done context ends ReadLine at once.
type pipeLines struct {
	lines chan string
	done  chan struct{} // closed by Close: the reader stops sending
	err   error         // the end of input's error (nil: io.EOF); set before lines is closed
}

// maxLineBytes bounds one line of piped input.
const maxLineBytes = 16 << 20

func newPipeLines(in io.Reader) *pipeLines {
	p := &pipeLines{lines: make(chan string), done: make(chan struct{})}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), maxLineBytes)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			case <-p.done:
				return
			}
		}
		switch err := sc.Err(); {
		case errors.Is(err, bufio.ErrTooLong):
			p.err = usageErrorf("standard input: a line is longer than %d MiB", maxLineBytes>>20)
		case err != nil:
			p.err = fmt.Errorf("reading standard input: %w", err)
		}
	}()
	return p
}

func (p *pipeLines) ReadLine(ctx context.Context) (string, error) {
	select {
	case line, ok := <-p.lines:
		if !ok {
			if p.err != nil {
				return "", p.err
			}
			return "", io.EOF
		}
		return line, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (p *pipeLines) SetPrompt(string)  {}
func (p *pipeLines) Interactive() bool { return false }

func (p *pipeLines) Close() error {
	close(p.done)
	return nil
}
