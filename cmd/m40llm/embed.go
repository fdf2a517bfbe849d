package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/server"
	"github.com/urfave/cli/v2"
)

func embedCommand() *cli.Command {
	flags := append(modelFlags(),
		&cli.StringFlag{Name: "prompt", Aliases: []string{"p"}, Usage: "`TEXT` to embed, one input per line"},
		&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "read the inputs from `FILE` (- for standard input), one per line; without -p or -f, inputs piped on standard input are read"},
		&cli.StringFlag{Name: "pooling", Usage: "`TYPE` of pooling: mean, cls or last (default: the model's pooling type, else mean)"},
	)
	return &cli.Command{
		Name:  "embed",
		Usage: "print the embeddings of texts as /v1/embeddings answers them (JSON on stdout)",
		Description: "Each non-empty line of the text is one input, tokenized as prompts are (BOS and EOS as the " +
			"vocabulary asks). Its vector is the hidden state after the final norm pooled over its tokens and " +
			"divided by its Euclidean norm, as `serve --embeddings` computes it.",
		Flags: flags,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageErrorf("embed takes no arguments (got %q); pass the text with -p", c.Args().First())
			}
			pooling, err := model.ParsePooling(c.String("pooling"))
			if err != nil || (pooling != model.PoolingUnset && !pooling.Embeds()) {
				return usageErrorf("--pooling %q: use mean, cls or last", c.String("pooling"))
			}
			text, err := promptText(c)
			if err != nil {
				return err
			}
			var inputs []string
			for _, line := range strings.Split(text, "\n") {
				if line = strings.TrimSuffix(line, "\r"); line != "" {
					inputs = append(inputs, line)
				}
			}
			if len(inputs) == 0 {
				return usageErrorf("no text to embed")
			}
			m, err := loadModel(c, 1)
			if err != nil {
				return err
			}
			defer m.Close()
			if pooling == model.PoolingUnset {
				pooling = model.PoolingMean
				if m.Config.Pooling.Embeds() {
					pooling = m.Config.Pooling
				}
			}
			s, err := m.NewSession(0)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			out := server.EmbeddingResponse{Object: "list", Model: strings.TrimSuffix(filepath.Base(c.String("model")), ".gguf"), Data: []server.EmbeddingData{}}
			for i, in := range inputs {
				ids := m.Tokenizer.Encode(in, true, true)
				v, err := s.Embed(ctx, ids, model.EmbedOptions{Pooling: pooling})
				if errors.Is(err, model.ErrContextFull) {
					return fmt.Errorf("input %d: %w (raise --ctx-size)", i, err)
				}
				if err != nil {
					return fmt.Errorf("input %d: %w", i, err)
				}
				out.Data = append(out.Data, server.EmbeddingData{Object: "embedding", Index: i, Embedding: v})
				out.Usage.PromptTokens += len(ids)
			}
			out.Usage.TotalTokens = out.Usage.PromptTokens
			if c.Bool("verbose") {
				fmt.Fprintf(c.App.ErrWriter, "m40llm: %d inputs, %d tokens, %s pooling\n", len(inputs), out.Usage.PromptTokens, pooling)
			}
			enc := json.NewEncoder(c.App.Writer)
			return enc.Encode(out)
		},
	}
}
