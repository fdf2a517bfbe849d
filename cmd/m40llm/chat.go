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

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/chat"
	"github.com/urfave/cli/v2"
)

// chatFlags are the flags of chat and run.
func chatFlags() []cli.Flag {
	flags := append(modelFlags(),
		&cli.StringFlag{Name: "system", Usage: "system message `TEXT` (/set system changes it in the chat)"},
		&cli.IntFlag{Name: "n-predict", Aliases: []string{"n"}, Value: -1, Usage: "reply with at most `N` tokens (-1: until the end of the turn)"},
		&cli.BoolFlag{Name: "ignore-eos", Usage: "keep generating past end-of-turn tokens (to the -n limit or a full context)"},
		allowSpecialFlag(),
		chatTemplateFlag(),
	)
	return append(flags, samplingFlags()...)
}

func chatCommand() *cli.Command {
	return &cli.Command{
		Name:  "chat",
		Usage: "talk to the model through its chat template; /help lists the commands, /bye or Ctrl-D quits",
		Description: "On a terminal, lines are edited with history (Up, Down, Ctrl-R; kept in the user's cache directory, " +
			"m40llm/chat_history under $XDG_CACHE_HOME or ~/.cache). A line starting with \"\"\" begins a message of several lines, which a line ending with " +
			"\"\"\" ends. Ctrl-C clears the line, or during a reply stops it (the reply and its message are dropped from the " +
			"conversation). Lines starting with / are commands: /help, /set, /show, /reset, /bye. With standard input not a " +
			"terminal each line is a message.",
		Flags: chatFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageErrorf("chat takes no arguments (got %q); for one prompt use m40llm run MODEL PROMPT", c.Args().First())
			}
			return runChat(c, "")
		},
	}
}

// runCommand is ollama's "run": one prompt gives one reply, none a chat.
func runCommand() *cli.Command {
	var flags []cli.Flag
	for _, f := range chatFlags() {
		if f.Names()[0] == "model" {
			// The model is the first argument; loadModel reads it here.
			f = &cli.StringFlag{Name: "model", Hidden: true}
		}
		flags = append(flags, f)
	}
	return &cli.Command{
		Name:      "run",
		Usage:     "as ollama run: reply to PROMPT (or a prompt piped on standard input) through the chat template and exit; with neither, chat",
		ArgsUsage: "MODEL.gguf [PROMPT...]",
		Description: "The words of PROMPT are joined with spaces, as ollama does. Without PROMPT and with standard input " +
			"not a terminal, all of standard input is the prompt (less one trailing newline). Otherwise this is m40llm chat.",
		Flags: flags,
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return usageErrorf("run needs a model: run MODEL.gguf [PROMPT]")
			}
			if err := c.Set("model", c.Args().First()); err != nil {
				return err
			}
			prompt := strings.Join(c.Args().Tail(), " ")
			if prompt == "" && !isTerminal(c.App.Reader) {
				text, err := readText(c.App.Reader, maxPromptBytes, "standard input")
				if err != nil {
					return err
				}
				if prompt = strings.TrimSuffix(text, "\n"); prompt == "" {
					return usageErrorf("no prompt: standard input was empty")
				}
			}
			return runChat(c, prompt)
		},
	}
}

// runChat loads the model and answers prompt, or with prompt "" chats
// with the lines of standard input.
func runChat(c *cli.Context, prompt string) error {
	file, err := chatTemplateFile(c)
	if err != nil {
		return err
	}
	m, err := loadModel(c, 1)
	if err != nil {
		return err
	}
	defer m.Close()
	tmpl, err := m.ChatTemplate()
	if file != nil {
		tmpl, err = file, nil
	}
	if err != nil {
		return err
	}
	params, _ := samplingParams(c)
	s, err := m.NewSession(0)
	if err != nil {
		return err
	}
	opts := model.GenerateOptions{MaxTokens: c.Int("n-predict"), Sampling: params, IgnoreEOS: c.Bool("ignore-eos")}
	if prompt != "" {
		ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
		defer stop()
		msgs := append(systemMessage(c), chat.Message{Role: "user", Content: prompt})
		_, err := chatTurn(ctx, c, m, s, tmpl, msgs, opts, c.Bool("verbose"))
		switch {
		case errors.Is(err, context.Canceled):
			return nil // interrupted by the user: the partial reply stands
		case errors.Is(err, model.ErrContextFull):
			return fmt.Errorf("%w (raise --ctx-size)", err)
		}
		return err
	}

	errw := chatOutput(c.App.Writer, c.App.ErrWriter)
	in, err := newLineReader(c.App.Reader, errw)
	if err != nil {
		return err
	}
	defer in.Close()
	ch := &chatter{c: c, m: m, s: s, tmpl: tmpl, in: in, out: c.App.Writer, errw: errw,
		params: params, seed: c.Int64("seed"), maxTokens: opts.MaxTokens, ignoreEOS: opts.IgnoreEOS,
		verbose: c.Bool("verbose"), system: c.String("system")}
	// On a terminal SIGINT (Ctrl-C while the terminal is not raw, that is
	// during a reply) stops the reply; at the prompt the line editor reads
	// Ctrl-C as a key. With input from a pipe SIGINT ends the chat, as
	// SIGTERM always does.
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		for {
			select {
			case sig := <-sigs:
				if sig == os.Interrupt && in.Interactive() {
					ch.replies.stop()
					continue
				}
				cancel()
			case <-ctx.Done():
				return
			}
		}
	}()
	fmt.Fprintf(errw, "m40llm: chat template %s; /help lists commands, /bye or Ctrl-D exits\n", tmpl.Name())
	return ch.loop(ctx)
}

// systemMessage is the --system message, if any, as a history.
func systemMessage(c *cli.Context) []chat.Message {
	if sys := c.String("system"); sys != "" {
		return []chat.Message{{Role: "system", Content: sys}}
	}
	return nil
}

// chatTemplateFlag is the flag of chat and serve that replaces the
// model's chat template.
func chatTemplateFlag() cli.Flag {
	return &cli.StringFlag{Name: "chat-template-file", Usage: "render chats with the Jinja chat template in `FILE` instead of the model's own " +
		"(e.g. one with tool calling: serve answers tools only with a template that renders them)"}
}

// chatTemplateFile reads --chat-template-file: nil without the flag, a
// usage error (exit 2) for a file that cannot be read or compiled.
func chatTemplateFile(c *cli.Context) (*chat.Template, error) {
	path := c.String("chat-template-file")
	if path == "" {
		return nil, nil
	}
	t, err := chat.ParseFile(path)
	if err != nil {
		return nil, usageErrorf("--chat-template-file: %v", err)
	}
	return t, nil
}

// allowSpecialFlag is the flag of chat and serve that parses control-token
// text in messages as control tokens.
func allowSpecialFlag() cli.Flag {
	return &cli.BoolFlag{Name: "allow-special-in-content",
		Usage: "parse control-token text in messages (\"<|im_end|>\") as control tokens, as in the template's own text; by default messages are plain text"}
}

// turnError is chatTurn's error for a turn that did not start (the
// template failed, the conversation is longer than the context): a chat
// goes on after it.
type turnError struct{ err error }

func (e *turnError) Error() string { return e.err.Error() }
func (e *turnError) Unwrap() error { return e.err }

// chatTurn renders msgs through tmpl, streams the reply to stdout ending
// with a newline, and returns it. A turn that cannot start gives a
// *turnError; a cancelled ctx gives context.Canceled.
func chatTurn(ctx context.Context, c *cli.Context, m *model.Model, s *model.Session, tmpl *chat.Template, msgs []chat.Message, opts model.GenerateOptions, verbose bool) (string, error) {
	out, errw := c.App.Writer, c.App.ErrWriter
	ids, _, err := m.ChatTokens(ctx, tmpl, msgs,
		model.ChatOptions{AddGenerationPrompt: true, AllowSpecialInContent: c.Bool("allow-special-in-content")})
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(out)
		return "", err
	}
	if err != nil {
		return "", &turnError{err}
	}
	if len(ids) >= m.CtxSize() {
		return "", &turnError{fmt.Errorf("%w: the conversation needs %d tokens, the context has %d", model.ErrContextFull, len(ids), m.CtxSize())}
	}
	var reply strings.Builder
	res, err := s.Generate(ctx, ids, opts, func(text string) error {
		reply.WriteString(text)
		_, err := io.WriteString(out, text)
		return err
	})
	fmt.Fprintln(out)
	if err != nil {
		return reply.String(), err
	}
	if verbose {
		printStats(errw, m, res)
	}
	return reply.String(), nil
}
