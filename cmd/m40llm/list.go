package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/m40llm/m40llm/gguf"
	"github.com/urfave/cli/v2"
)

func listCommand() *cli.Command {
	return &cli.Command{
		Name:      "list",
		Usage:     "list the GGUF models of a directory (what serve --models serves), from their metadata only",
		ArgsUsage: "[DIR]",
		Description: "DIR defaults to M40LLM_MODELS, else the current directory. One row per *.gguf file: its name in the API " +
			"(the file name without .gguf), architecture, parameters, file type, size and training context length; a file " +
			"that cannot be read is listed with the error.",
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usageErrorf("list takes at most one directory (got %d arguments)", c.NArg())
			}
			dir := c.Args().First()
			if dir == "" {
				dir = os.Getenv("M40LLM_MODELS")
			}
			if dir == "" {
				dir = "."
			}
			return writeModelList(c.App.Writer, dir)
		},
	}
}

// modelRow is one file of the list.
type modelRow struct {
	name, arch, params, fileType, size, ctx, err string
}

// readModelRow reads the row of the GGUF file at path from its metadata;
// a file that cannot be read has its error in err.
func readModelRow(path string) modelRow {
	r := modelRow{name: strings.TrimSuffix(filepath.Base(path), ".gguf"), arch: "-", params: "-", fileType: "-", size: "-", ctx: "-"}
	if st, err := os.Stat(path); err == nil {
		r.size = humanBytes(st.Size())
	}
	f, err := gguf.Open(path)
	if err != nil {
		r.err = err.Error()
		return r
	}
	defer f.Close()
	if a, err := f.Metadata.String("general.architecture"); err == nil {
		r.arch = a
		if n, err := f.Metadata.Uint32(a + ".context_length"); err == nil {
			r.ctx = fmt.Sprint(n)
		}
	}
	r.params = humanCount(f.ParameterCount())
	r.fileType = fileTypeName(f)
	return r
}

// writeModelList prints the models of dir, sorted by name; it fails only
// when dir cannot be read.
func writeModelList(w io.Writer, dir string) error {
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var rows []modelRow
	for _, de := range des {
		if n := de.Name(); strings.HasSuffix(n, ".gguf") && !strings.HasPrefix(n, ".") && !de.IsDir() {
			rows = append(rows, readModelRow(filepath.Join(dir, n)))
		}
	}
	slices.SortFunc(rows, func(a, b modelRow) int { return strings.Compare(a.name, b.name) })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tARCH\tPARAMS\tTYPE\tSIZE\tCONTEXT\tERROR")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.name, r.arch, r.params, r.fileType, r.size, r.ctx, r.err)
	}
	return tw.Flush()
}
