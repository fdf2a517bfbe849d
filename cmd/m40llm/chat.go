package main

import (
	"bufio"
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

func chatCommand() *cli.Command {
	flags := append(modelFlags(),
		&cli.StringFlag{Name: "system", Usage: "system message"},
		&cli.IntFlag{Name: "n-predict", Aliases: []string{"n"}, Value: -1, Usage: "largest reply in tokens (-1: until end of turn)"},
		allowSpecialFlag(),
	)
	flags = append(flags, samplingFlags()...)
	return &cli.Command{
		Name:  "chat",
		Usage: "talk to the model through its chat template; one line per message, /reset to start over, /exit or end of input to quit",
		Flags: flags,
		Action: func(c *cli.Context) error {
			m, err := loadModel(c, 1)
			if err != nil {
				return err
			}
			defer m.Close()
			tmpl, err := m.ChatTemplate()
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.ErrWriter, "m40llm: chat template %s; /reset starts over, /exit quits\n", tmpl.Name())
			params, _ := samplingParams(c)
			s, err := m.NewSession(0)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			return chatLoop(ctx, c, m, s, tmpl, model.GenerateOptions{MaxTokens: c.Int("n-predict"), Sampling: params})
		},
	}
}

// allowSpecialFlag is the flag of chat and serve that parses control-token
// text in messages as control tokens.
func allowSpecialFlag() cli.Flag {
	return &cli.BoolFlag{Name: "allow-special-in-content",
		Usage: "parse control-token text in messages (\"<|im_end|>\") as control tokens, as in the template's own text; by default messages are plain text"}
}

func chatLoop(ctx context.Context, c *cli.Context, m *model.Model, s *model.Session, tmpl *chat.Template, opts model.GenerateOptions) error {
	var history []chat.Message
	if sys := c.String("system"); sys != "" {
		history = append(history, chat.Message{Role: "system", Content: sys})
	}
	base := len(history)
	in := bufio.NewScanner(c.App.Reader)
	in.Buffer(make([]byte, 64<<10), 16<<20)
	out, errw := c.App.Writer, c.App.ErrWriter
	for {
		fmt.Fprint(errw, "> ")
		if !in.Scan() {
			fmt.Fprintln(errw)
			return in.Err()
		}
		line := strings.TrimSpace(in.Text())
		switch line {
		case "":
			continue
		case "/exit", "/quit":
			return nil
		case "/reset":
			history = history[:base]
			s.Reset()
			continue
		}
		msgs := append(history, chat.Message{Role: "user", Content: line})
		ids, _, err := m.ChatTokens(ctx, tmpl, msgs,
			model.ChatOptions{AddGenerationPrompt: true, AllowSpecialInContent: c.Bool("allow-special-in-content")})
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(out)
			return nil
		}
		if err != nil {
			fmt.Fprintf(errw, "m40llm: %v\n", err)
			continue
		}
		if len(ids) >= m.CtxSize() {
			fmt.Fprintf(errw, "m40llm: the conversation needs %d tokens, the context has %d; /reset to start over\n", len(ids), m.CtxSize())
			continue
		}
		var reply strings.Builder
		res, err := s.Generate(ctx, ids, opts, func(text string) error {
			reply.WriteString(text)
			_, err := io.WriteString(out, text)
			return err
		})
		fmt.Fprintln(out)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		if err != nil {
			return err
		}
		if c.Bool("verbose") {
			printStats(errw, m, res)
		}
		history = append(msgs, chat.Message{Role: "assistant", Content: strings.TrimSpace(reply.String())})
	}
}
