package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/m40llm/m40llm/model"
	"github.com/urfave/cli/v2"
)

func generateCommand() *cli.Command {
	flags := append(modelFlags(),
		&cli.StringFlag{Name: "prompt", Aliases: []string{"p"}, Usage: "prompt `TEXT` (special tokens such as <|im_start|> are parsed)"},
		&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "read the prompt from `FILE` (- for standard input), less one trailing newline; without -p or -f, a prompt piped on standard input is read"},
		&cli.IntFlag{Name: "n-predict", Aliases: []string{"n"}, Value: -1, Usage: "`N` tokens to generate (-1: until end of text or a full context)"},
		&cli.StringSliceFlag{Name: "stop", Usage: "stop when `TEXT` is generated, which is not printed (repeatable)"},
		&cli.BoolFlag{Name: "ignore-eos", Usage: "keep generating past end-of-text tokens"},
		&cli.BoolFlag{Name: "no-bos", Usage: "do not add the BOS token even when the model asks for it"},
	)
	flags = append(flags, samplingFlags()...)
	return &cli.Command{
		Name:  "generate",
		Usage: "continue a prompt; the generated text goes to stdout as it is produced, statistics to stderr",
		Flags: flags,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageErrorf("generate takes no arguments (got %q); pass the prompt with -p", c.Args().First())
			}
			prompt, err := promptText(c)
			if err != nil {
				return err
			}
			m, err := loadModel(c, 1)
			if err != nil {
				return err
			}
			defer m.Close()

			params, seed := samplingParams(c)
			if c.Bool("verbose") {
				fmt.Fprintf(c.App.ErrWriter, "m40llm: sampling %+v (seed %d)\n", params, seed)
			}
			tok := m.Tokenizer
			ids := tok.Encode(prompt, !c.Bool("no-bos"), true)
			if len(ids) == 0 {
				return usageErrorf("the prompt is empty after tokenization")
			}
			s, err := m.NewSession(0)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := s.Generate(ctx, ids, model.GenerateOptions{
				MaxTokens: c.Int("n-predict"),
				Sampling:  params,
				Stop:      c.StringSlice("stop"),
				IgnoreEOS: c.Bool("ignore-eos"),
			}, func(text string) error {
				_, err := io.WriteString(c.App.Writer, text)
				return err
			})
			fmt.Fprintln(c.App.ErrWriter)
			if res != nil {
				printStats(c.App.ErrWriter, m, res)
			}
			switch {
			case errors.Is(err, context.Canceled):
				return nil // interrupted by the user: the partial output stands
			case errors.Is(err, model.ErrContextFull):
				return fmt.Errorf("%w (raise --ctx-size)", err)
			}
			return err
		},
	}
}

// promptText returns the prompt from -p, from -f (a file, or standard
// input for "-"), or, with neither, from standard input when it is not a
// terminal (a pipe or a file). Text read from a file or standard input
// loses one trailing newline, as llama.cpp's -f does, so that
// "echo 'Once upon a time' > p.txt; generate -f p.txt" continues the same
// text as -p 'Once upon a time'.
func promptText(c *cli.Context) (string, error) {
	p, f := c.String("prompt"), c.String("file")
	var (
		text string
		err  error
	)
	switch {
	case c.IsSet("prompt") && f != "":
		return "", usageErrorf("give the prompt with -p or -f, not both")
	case c.IsSet("prompt"):
		return p, nil
	case f == "-":
		text, err = readText(c.App.Reader, maxPromptBytes, "standard input")
	case f != "":
		text, err = readFileText(f, maxPromptBytes)
	case !isTerminal(c.App.Reader):
		text, err = readText(c.App.Reader, maxPromptBytes, "standard input")
		if err == nil && text == "" {
			return "", usageErrorf("no prompt: pass -p TEXT or -f FILE, or pipe it on standard input (which was empty)")
		}
	default:
		return "", usageErrorf("no prompt: pass -p TEXT or -f FILE, or pipe it on standard input")
	}
	return strings.TrimSuffix(text, "\n"), err
}

func printStats(w io.Writer, m *model.Model, r *model.Result) {
	fmt.Fprintf(w, "m40llm: load %v | prompt %d tokens (%d cached) in %v, %.1f tok/s | generated %d tokens in %v, %.1f tok/s | finish: %s\n",
		m.LoadTime.Round(time.Millisecond),
		r.PromptTokens, r.CachedTokens, r.PromptTime.Round(time.Microsecond), r.PromptTokensPerSecond(),
		len(r.Tokens), r.GenTime.Round(time.Microsecond), r.TokensPerSecond(), orNone(string(r.Finish)))
}
