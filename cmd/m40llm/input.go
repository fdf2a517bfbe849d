package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// Bounds on text read from a file or standard input: far more than any
// context holds (a 128k-token context is well under 1 MiB of text), and
// little enough that -f /dev/zero stops at once.
const (
	maxPromptBytes   = 8 << 20
	maxTokenizeBytes = 64 << 20
)

// readText reads all of r, or fails with a usage error (exit 2) once it
// holds more than limit bytes; what names the input in the message.
func readText(r io.Reader, limit int64, what string) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", what, err)
	}
	if int64(len(b)) > limit {
		return "", usageErrorf("%s is larger than %d MiB; nothing that big fits a context", what, limit>>20)
	}
	return string(b), nil
}

// readFileText is readText of the file at path; a file that cannot be
// opened gives the *fs.PathError (exit 3).
func readFileText(path string, limit int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	text, err := readText(f, limit, path)
	var ee *exitError
	if err != nil && !errors.As(err, &ee) {
		return "", err
	}
	return text, err
}

// isTerminal says whether r is a terminal, where nothing is piped in.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
