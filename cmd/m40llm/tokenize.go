package main

import (
	"bufio"
	"fmt"
	"io"
	"strconv"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/model/tokenizer"
	"github.com/urfave/cli/v2"
)

// tokenizeOptions are the settings of one tokenize run.
type tokenizeOptions struct {
	model string // GGUF file with the vocabulary
	noBOS bool   // leave out the BOS token the model asks for
}

func tokenizeCommand() *cli.Command {
	return &cli.Command{
		Name:      "tokenize",
		Usage:     "print the token ids of a text as a JSON array",
		ArgsUsage: "[TEXT]",
		Description: "The text comes from TEXT, from --file, or from standard input when neither is given. " +
			"Special tokens written in the text (\"<s>\", \"<|im_start|>\") become their ids, and BOS " +
			"(and EOS) are added when the model asks for them, as llama.cpp's llama-tokenize does.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "GGUF `FILE` whose vocabulary to use", EnvVars: []string{"M40LLM_MODEL"}},
			&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "read the text from `FILE` (- for standard input), as it is"},
			&cli.BoolFlag{Name: "no-bos", Usage: "do not add the BOS token"},
		},
		Action: func(c *cli.Context) error {
			o := tokenizeOptions{model: c.String("model"), noBOS: c.Bool("no-bos")}
			if o.model == "" {
				return usageErrorf("tokenize needs a model: -m MODEL.gguf")
			}
			var (
				text string
				err  error
			)
			switch file := c.String("file"); {
			case c.NArg() > 1:
				return usageErrorf("tokenize takes at most one TEXT argument, got %d (quote the text)", c.NArg())
			case c.NArg() == 1 && file != "":
				return usageErrorf("give the text as TEXT or --file, not both")
			case c.NArg() == 1:
				text = c.Args().First()
			case file == "-":
				if text, err = readText(c.App.Reader, maxTokenizeBytes, "standard input"); err != nil {
					return err
				}
			case file != "":
				if text, err = readFileText(file, maxTokenizeBytes); err != nil {
					return err
				}
			default:
				if text, err = readText(c.App.Reader, maxTokenizeBytes, "standard input"); err != nil {
					return err
				}
			}
			return runTokenize(c.App.Writer, o, text)
		},
	}
}

// runTokenize loads the vocabulary of o.model and writes the ids of text.
func runTokenize(w io.Writer, o tokenizeOptions, text string) error {
	f, err := gguf.Open(o.model)
	if err != nil {
		return fmt.Errorf("%s: %w", o.model, err)
	}
	tok, err := tokenizer.New(&f.Metadata)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", o.model, err)
	}
	ids := tok.Encode(text, true, true)
	if o.noBOS && tok.AddBOS() && len(ids) > 0 && ids[0] == tok.BOS() {
		ids = ids[1:]
	}
	return writeIDs(w, ids)
}

// writeIDs prints ids as one JSON array on a line.
func writeIDs(w io.Writer, ids []int32) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	buf := make([]byte, 0, 16)
	bw.WriteByte('[')
	for i, id := range ids {
		buf = buf[:0]
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = strconv.AppendInt(buf, int64(id), 10)
		bw.Write(buf)
	}
	bw.WriteString("]\n")
	return bw.Flush()
}
