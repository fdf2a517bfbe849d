package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/m40llm/m40llm/gguf"
	"github.com/urfave/cli/v2"
)

// arrayPreview is how many array elements inspect shows without --all.
const arrayPreview = 8

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:        "inspect",
		Usage:       "summarise a GGUF file: architecture, hyper-parameters, tokenizer, metadata, tensors",
		ArgsUsage:   "MODEL.gguf",
		Description: "The file is the argument or the value of -m, as the other commands take it.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "GGUF `FILE` to summarise (instead of the argument)"},
			&cli.BoolFlag{Name: "json", Usage: "print machine-readable JSON"},
			&cli.BoolFlag{Name: "all", Usage: "print long arrays and strings in full"},
		},
		Action: func(c *cli.Context) error {
			path := c.String("model")
			switch {
			case c.NArg() > 1:
				return usageErrorf("inspect takes one MODEL.gguf argument, got %d", c.NArg())
			case c.NArg() == 1 && path != "":
				return usageErrorf("give the model as the argument or with -m, not both")
			case c.NArg() == 1:
				path = c.Args().First()
			case path == "":
				return usageErrorf("inspect needs a model: inspect MODEL.gguf or -m MODEL.gguf")
			}
			f, err := gguf.Open(path)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			defer f.Close()
			if c.Bool("json") {
				return writeInspectJSON(c.App.Writer, path, f, c.Bool("all"))
			}
			return writeInspectText(c.App.Writer, path, f, c.Bool("all"))
		},
	}
}

// tensorBytes sums the data bytes of all tensors.
func tensorBytes(f *gguf.File) int64 {
	var n int64
	for i := range f.Tensors {
		n += f.Tensors[i].Size
	}
	return n
}

// typeCounts returns "F32: 11, Q8_0: 37" style counts.
func typeCounts(f *gguf.File) string {
	counts := map[gguf.Type]int{}
	for _, t := range f.Tensors {
		counts[t.Type]++
	}
	types := make([]gguf.Type, 0, len(counts))
	for t := range counts {
		types = append(types, t)
	}
	sort.Slice(types, func(i, j int) bool { return types[i] < types[j] })
	parts := make([]string, len(types))
	for i, t := range types {
		parts[i] = fmt.Sprintf("%s: %d", t, counts[t])
	}
	return strings.Join(parts, ", ")
}

func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f B", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2f M", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.2f K", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// formatValue renders a metadata value for the text view.
func formatValue(v gguf.Value, all bool) string {
	switch v.Type() {
	case gguf.ValueString:
		s := v.String()
		if !all && len(s) > 120 {
			return fmt.Sprintf("%q… (%d bytes)", s[:120], len(s))
		}
		return fmt.Sprintf("%q", s)
	case gguf.ValueArray:
		a, _ := v.Array()
		n := a.Len()
		shown := n
		if !all {
			shown = min(n, arrayPreview)
		}
		parts := make([]string, shown)
		for i := range shown {
			parts[i] = formatValue(a.Index(i), all)
		}
		s := "[" + strings.Join(parts, ", ")
		if shown < n {
			s += fmt.Sprintf(", … %d more", n-shown)
		}
		return fmt.Sprintf("%s] (%s x %d)", s, a.Type, n)
	}
	return fmt.Sprint(v.Any())
}

// jsonValue converts a metadata value to something encoding/json can print,
// truncating arrays unless all is set. NaN and infinities become strings.
func jsonValue(v gguf.Value, all bool) any {
	switch v.Type() {
	case gguf.ValueArray:
		a, _ := v.Array()
		n := a.Len()
		if !all {
			n = min(n, arrayPreview)
		}
		out := make([]any, n)
		for i := range n {
			out[i] = jsonValue(a.Index(i), all)
		}
		return out
	case gguf.ValueFloat32, gguf.ValueFloat64:
		f, _ := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Sprint(f)
		}
		return f
	}
	return v.Any()
}

type tokenizerSummary struct {
	Model        string `json:"model,omitempty"`
	Pre          string `json:"pre,omitempty"`
	Tokens       int    `json:"tokens"`
	Merges       int    `json:"merges"`
	BOS          *int64 `json:"bos_token_id,omitempty"`
	EOS          *int64 `json:"eos_token_id,omitempty"`
	ChatTemplate bool   `json:"chat_template"`
}

func summarizeTokenizer(f *gguf.File) *tokenizerSummary {
	md := &f.Metadata
	if !md.Has("tokenizer.ggml.model") && !md.Has("tokenizer.ggml.tokens") {
		return nil
	}
	s := &tokenizerSummary{}
	s.Model, _ = md.String("tokenizer.ggml.model")
	s.Pre, _ = md.String("tokenizer.ggml.pre")
	if a, err := md.Array("tokenizer.ggml.tokens"); err == nil {
		s.Tokens = a.Len()
	}
	if a, err := md.Array("tokenizer.ggml.merges"); err == nil {
		s.Merges = a.Len()
	}
	if id, err := md.Int("tokenizer.ggml.bos_token_id"); err == nil {
		s.BOS = &id
	}
	if id, err := md.Int("tokenizer.ggml.eos_token_id"); err == nil {
		s.EOS = &id
	}
	s.ChatTemplate = md.Has("tokenizer.chat_template")
	return s
}

// tokenText returns the vocabulary entry for id, or "".
func tokenText(f *gguf.File, id int64) string {
	toks, err := f.Metadata.Strings("tokenizer.ggml.tokens")
	if err != nil || id < 0 || id >= int64(len(toks)) {
		return ""
	}
	return toks[id]
}

func writeInspectText(w io.Writer, path string, f *gguf.File, all bool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	arch := f.Architecture()
	fmt.Fprintf(tw, "file:\t%s (%s)\n", path, humanBytes(f.Size))
	fmt.Fprintf(tw, "format:\tGGUF v%d, %d metadata keys, %d tensors, alignment %d, data at byte %d\n",
		f.Version, f.Metadata.Len(), len(f.Tensors), f.Alignment, f.DataOffset)
	fmt.Fprintf(tw, "architecture:\t%s\n", orNone(arch))
	if name, err := f.Metadata.String("general.name"); err == nil {
		fmt.Fprintf(tw, "name:\t%s\n", name)
	}
	fmt.Fprintf(tw, "parameters:\t%s (%d)\n", humanCount(f.ParameterCount()), f.ParameterCount())
	if len(f.Tensors) > 0 {
		fmt.Fprintf(tw, "tensor data:\t%s (%s)\n", humanBytes(tensorBytes(f)), typeCounts(f))
	}
	tw.Flush()

	if arch != "" {
		fmt.Fprintf(w, "\nhyper-parameters (%s.*):\n", arch)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, kv := range f.Metadata.KVs() {
			if rest, ok := strings.CutPrefix(kv.Key, arch+"."); ok {
				fmt.Fprintf(tw, "  %s\t%s\n", rest, formatValue(kv.Value, all))
			}
		}
		tw.Flush()
	}

	if ts := summarizeTokenizer(f); ts != nil {
		fmt.Fprintf(w, "\ntokenizer:\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  model\t%s\n", orNone(ts.Model))
		if ts.Pre != "" {
			fmt.Fprintf(tw, "  pre-tokenizer\t%s\n", ts.Pre)
		}
		fmt.Fprintf(tw, "  vocabulary\t%d tokens\n", ts.Tokens)
		if ts.Merges > 0 {
			fmt.Fprintf(tw, "  merges\t%d\n", ts.Merges)
		}
		if ts.BOS != nil {
			fmt.Fprintf(tw, "  bos\t%d %q\n", *ts.BOS, tokenText(f, *ts.BOS))
		}
		if ts.EOS != nil {
			fmt.Fprintf(tw, "  eos\t%d %q\n", *ts.EOS, tokenText(f, *ts.EOS))
		}
		fmt.Fprintf(tw, "  chat template\t%v\n", ts.ChatTemplate)
		tw.Flush()
	}

	fmt.Fprintf(w, "\nmetadata (%d keys):\n", f.Metadata.Len())
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, kv := range f.Metadata.KVs() {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", kv.Key, kv.Value.Type(), formatValue(kv.Value, all))
	}
	tw.Flush()

	if len(f.Tensors) > 0 {
		fmt.Fprintf(w, "\ntensors (%d; shapes in ggml ne order, innermost first):\n", len(f.Tensors))
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  name\ttype\tshape\telements\tbytes\toffset\n")
		for _, t := range f.Tensors {
			fmt.Fprintf(tw, "  %s\t%s\t%v\t%d\t%d\t%d\n", t.Name, t.Type, t.Dims, t.Elements(), t.Size, t.Offset)
		}
		tw.Flush()
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

type jsonKV struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Len   *int   `json:"len,omitempty"`
	Value any    `json:"value"`
}

type jsonTensor struct {
	Name     string  `json:"name"`
	Type     string  `json:"type"`
	Dims     []int64 `json:"ne"`
	Elements int64   `json:"elements"`
	Bytes    int64   `json:"bytes"`
	Offset   int64   `json:"offset"`
}

type jsonInspect struct {
	Path         string            `json:"path"`
	Size         int64             `json:"size"`
	Version      uint32            `json:"version"`
	Alignment    int64             `json:"alignment"`
	DataOffset   int64             `json:"data_offset"`
	Architecture string            `json:"architecture"`
	Parameters   int64             `json:"parameters"`
	TensorBytes  int64             `json:"tensor_bytes"`
	Tokenizer    *tokenizerSummary `json:"tokenizer,omitempty"`
	Metadata     []jsonKV          `json:"metadata"`
	Tensors      []jsonTensor      `json:"tensors"`
}

func writeInspectJSON(w io.Writer, path string, f *gguf.File, all bool) error {
	out := jsonInspect{
		Path: path, Size: f.Size, Version: f.Version, Alignment: f.Alignment,
		DataOffset: f.DataOffset, Architecture: f.Architecture(),
		Parameters: f.ParameterCount(), TensorBytes: tensorBytes(f),
		Tokenizer: summarizeTokenizer(f),
		Metadata:  make([]jsonKV, 0, f.Metadata.Len()),
		Tensors:   make([]jsonTensor, 0, len(f.Tensors)),
	}
	for _, kv := range f.Metadata.KVs() {
		j := jsonKV{Key: kv.Key, Type: kv.Value.Type().String(), Value: jsonValue(kv.Value, all)}
		if a, ok := kv.Value.Array(); ok {
			n := a.Len()
			j.Len = &n
			j.Type = "arr[" + a.Type.String() + "]"
		}
		out.Metadata = append(out.Metadata, j)
	}
	for _, t := range f.Tensors {
		out.Tensors = append(out.Tensors, jsonTensor{t.Name, t.Type.String(), t.Dims, t.Elements(), t.Size, t.Offset})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
