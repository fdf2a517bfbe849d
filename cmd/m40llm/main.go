// Command m40llm runs LLaMA-family GGUF models on NVIDIA GPUs (Tesla M40 and
// newer) and on the CPU.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/m40llm/m40llm/internal/errclass"
	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// Exit statuses: 0 success, 2 a command-line mistake, and for every other
// failure the status of its class (errclass.Of), so that scripts can tell
// a missing file from a model this build cannot run or a GPU that failed.
// README.md lists them.
var exitCodes = map[errclass.Class]int{
	errclass.Internal:    1,
	errclass.Invalid:     2,
	errclass.IO:          3,
	errclass.Format:      4,
	errclass.Unsupported: 5,
	errclass.NoDevice:    6,
	errclass.OutOfMemory: 7,
	errclass.ContextFull: 8,
	errclass.Device:      9,
	errclass.Canceled:    130,
}

// exitCode returns the exit status of err (not nil).
func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitCodes[errclass.Of(err)]
}

// exitError carries an exit status through urfave/cli.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErrorf reports a command-line mistake (exit status 2).
func usageErrorf(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

func onUsageError(c *cli.Context, err error, isSubcommand bool) error {
	return &exitError{code: 2, err: flagUsageError(c, err, isSubcommand)}
}

func init() {
	// --version and -V everywhere; -v too where nothing follows it, as in
	// ollama: before a command (and after it) -v is --verbose
	// (reorderArgs moves it into the command).
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Aliases: []string{"V", "v"},
		Usage: "print the version (-v only alone: with a command, -v is --verbose)"}
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Reader:    stdin,
		Name:      "m40llm",
		Usage:     "run LLaMA-family GGUF models on Tesla M40 (sm_52) and newer NVIDIA GPUs, or on the CPU",
		Version:   version,
		Writer:    stdout,
		ErrWriter: stderr,
		Commands: []*cli.Command{
			versionCommand(),
			inspectCommand(),
			devicesCommand(),
			tokenizeCommand(),
			generateCommand(),
			chatCommand(),
			runCommand(),
			perplexityCommand(),
			embedCommand(),
			benchCommand(),
			serveCommand(),
			listCommand(),
			synthCommand(),
		},
		// Errors are printed once, by main.
		ExitErrHandler:  func(*cli.Context, error) {},
		HideHelpCommand: true,
		OnUsageError:    onUsageError,
	}
	for _, c := range app.Commands {
		if c.OnUsageError == nil {
			c.OnUsageError = onUsageError
		}
	}
	return app
}

// run executes the CLI with the process's standard input and returns the
// exit status.
func run(args []string, stdout, stderr io.Writer) int {
	return runWithInput(args, os.Stdin, stdout, stderr)
}

// runWithInput executes the CLI reading standard input from stdin.
func runWithInput(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := newApp(stdin, stdout, stderr)
	err := checkCommand(app, args)
	if err == nil {
		err = app.Run(reorderArgs(app, args))
	}
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "m40llm: %v\n", err)
	return exitCode(err)
}

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}
