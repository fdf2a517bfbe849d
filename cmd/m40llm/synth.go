package main

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model/synth"
	"github.com/urfave/cli/v2"
)

func synthCommand() *cli.Command {
	return &cli.Command{
		Name:      "synth",
		Usage:     "write a random-weight model of a realistic shape, for benchmarks",
		ArgsUsage: "OUT.gguf",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "preset", Value: "tinyllama", Usage: "`NAME` of the shape: " + strings.Join(presetNames(), ", ")},
			&cli.StringFlag{Name: "type", Value: "F16", Usage: "`TYPE` of every 2-D weight (" + strings.Join(pureNames(), ", ") +
				") or llama.cpp mix (" + strings.Join(mixNames(), ", ") + "); K-quants fall back as in llama.cpp for rows not of whole 256-element blocks"},
			&cli.StringFlag{Name: "vocab-from", Usage: "copy the tokenizer from this GGUF `FILE` (its vocabulary size wins)"},
			&cli.IntFlag{Name: "layers", Usage: "`N` layers instead of the preset's (0: the preset's)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "random `SEED` of the weights (the same seed writes the same file)"},
			&cli.IntFlag{Name: "threads", Aliases: []string{"t"}, Usage: "`N` generator threads (0: one per CPU)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErrorf("synth takes exactly one OUT.gguf argument, got %d", c.NArg())
			}
			p, ok := synth.Presets[c.String("preset")]
			if !ok {
				return usageErrorf("--preset %q: want one of %s", c.String("preset"), strings.Join(presetNames(), ", "))
			}
			if n := c.Int("layers"); n > 0 {
				p.Layers = n
			} else if n < 0 {
				return usageErrorf("--layers must be positive")
			}
			typ, mix, ok := synth.ParseWeights(c.String("type"))
			if !ok {
				return usageErrorf("--type %q: want one of %s", c.String("type"), strings.Join(synth.WeightNames(), ", "))
			}
			opts := synth.Options{Type: typ, Mix: mix, Seed: c.Uint64("seed"), Workers: c.Int("threads")}
			vocab := 0
			if vf := c.String("vocab-from"); vf != "" {
				v, err := gguf.Open(vf)
				if err != nil {
					return fmt.Errorf("--vocab-from: %w", err)
				}
				defer v.Close()
				opts.Vocab = &v.Metadata
				if toks, err := v.Metadata.Array("tokenizer.ggml.tokens"); err == nil {
					vocab = toks.Len()
				}
			}
			out := c.Args().First()
			f, err := os.Create(out)
			if err != nil {
				return err
			}
			total := synth.Size(p, opts, vocab)
			progress := newProgress(c.App.ErrWriter, "writing "+out, total)
			opts.Progress = progress.update
			start := time.Now()
			w := bufio.NewWriterSize(f, 8<<20)
			err = synth.Write(w, p, opts)
			if err == nil {
				err = w.Flush()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			progress.done()
			if err != nil {
				os.Remove(out)
				return err
			}
			d := time.Since(start)
			weights := typ.String()
			if mix != synth.NoMix {
				weights = mix.String()
			}
			fmt.Fprintf(c.App.ErrWriter, "m40llm: wrote %s: synthetic %s, %s weights, %s in %v (%.2f GB/s)\n",
				out, p.Name, weights, humanBytes(total), d.Round(time.Millisecond), float64(total)/d.Seconds()/1e9)
			return nil
		},
	}
}

func presetNames() []string {
	names := make([]string, 0, len(synth.Presets))
	for n := range synth.Presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// pureNames and mixNames split synth.WeightNames into types and mixes.
func pureNames() []string {
	var names []string
	for _, n := range synth.WeightNames() {
		if _, m, _ := synth.ParseWeights(n); m == synth.NoMix {
			names = append(names, n)
		}
	}
	return names
}

func mixNames() []string {
	var names []string
	for _, n := range synth.WeightNames() {
		if _, m, _ := synth.ParseWeights(n); m != synth.NoMix {
			names = append(names, n)
		}
	}
	return names
}
