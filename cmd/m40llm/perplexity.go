package main

import (
	"fmt"
	"os"
	"time"

	"github.com/m40llm/m40llm/model"
	"github.com/urfave/cli/v2"
)

// defaultPerplexityCtx is the window when -c is not given (llama.cpp's
// default context).
const defaultPerplexityCtx = 512

func perplexityCommand() *cli.Command {
	flags := append(modelFlags(),
		&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "the text `FILE` to measure (required)"},
		&cli.IntFlag{Name: "chunks", Value: -1, Usage: "evaluate at most `N` windows of --ctx-size tokens (-1: all)"},
	)
	return &cli.Command{
		Name:  "perplexity",
		Usage: "measure perplexity over a text file by llama.cpp's method: windows of -c tokens, the second half of each scored",
		Flags: flags,
		Action: func(c *cli.Context) error {
			if c.String("file") == "" {
				return usageErrorf("no text: pass -f TEXT")
			}
			text, err := os.ReadFile(c.String("file"))
			if err != nil {
				return err
			}
			n := c.Int("ctx-size")
			if n == 0 {
				n = defaultPerplexityCtx
				if err := c.Set("ctx-size", fmt.Sprint(n)); err != nil {
					return err
				}
			}
			if n < 2 {
				return usageErrorf("--ctx-size %d: a window needs at least 2 tokens", n)
			}
			m, err := loadModel(c, 1)
			if err != nil {
				return err
			}
			defer m.Close()
			stderr, stdout := c.App.ErrWriter, c.App.Writer
			start := time.Now()
			tokens := m.Tokenizer.Encode(string(text), true, false)
			fmt.Fprintf(stderr, "m40llm: tokenized %d tokens in %v\n", len(tokens), time.Since(start).Round(time.Millisecond))
			kv := m.KV()
			fmt.Fprintf(stderr, "m40llm: perplexity over windows of %d tokens, KV cache keys %s, values %s\n", n, kv.TypeK, kv.TypeV)
			start = time.Now()
			res, err := model.Perplexity(c.Context, m, tokens, n, c.Int("chunks"), func(r model.PerplexityResult) {
				fmt.Fprintf(stdout, "[%d]%.4f,", r.Chunks, r.PPL)
			})
			fmt.Fprintln(stdout)
			if err != nil {
				return err
			}
			d := time.Since(start)
			fmt.Fprintf(stdout, "Final estimate: PPL = %.4f +/- %.5f\n", res.PPL, res.Err)
			fmt.Fprintf(stderr, "m40llm: %d chunks, %d tokens evaluated (%d scored) in %v: %.2f tokens/s\n",
				res.Chunks, res.Chunks*n, res.Tokens, d.Round(time.Millisecond), float64(res.Chunks*n)/d.Seconds())
			return nil
		},
	}
}
