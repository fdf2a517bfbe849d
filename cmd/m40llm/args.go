package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// reorderArgs returns the command line args (args[0] is the program) with
// each command's flags, and the values of those that take one, moved ahead
// of its positional arguments, so that "inspect MODEL --json" and
// "tokenize -m M TEXT --no-bos" parse as llama.cpp and ollama users write
// them: urfave/cli, like the flag package, stops reading flags at the
// first positional argument. Everything after "--" stays positional and
// in place.
//
// A top-level -v followed by a command moves into it, where -v is
// --verbose (alone it asks for the version); --version or -V among a
// command's flags asks for the version. "help [COMMAND]" becomes "[COMMAND] --help" (the help command is kept
// out of the command list).
//
// Otherwise only the order changes: a command line that names no command, an unknown
// command or an unknown flag is returned with the same words for the
// parser to report.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	var verbose []string // a top-level -v, which belongs to the command
	i := 1
	for ; i < len(args) && isFlagWord(args[i]); i++ {
		if args[i] == "-v" {
			verbose = []string{"-v"}
			continue
		}
		out = append(out, args[i]) // the top level has no flag that takes a value
	}
	if i == len(args) || args[i] == "--" {
		return append(append(out, verbose...), args[i:]...)
	}
	if args[i] == "help" || args[i] == "h" {
		if i+1 < len(args) && !isFlagWord(args[i+1]) {
			out = append(out, args[i+1])
		}
		return append(out, "--help")
	}
	cmd := app.Command(args[i])
	out = append(out, args[i])
	out = append(out, verbose...)
	if cmd == nil || cmd.SkipFlagParsing {
		return append(out, args[i+1:]...)
	}
	flags, positional := reorderCommandArgs(cmd, args[i+1:])
	for j := 0; j < len(flags); j++ {
		switch f := flags[j]; {
		case takesValue(cmd, f):
			j++ // "-p --version" is a prompt
		case (f == "--version" || f == "-V") && !hasFlag(cmd, f):
			return []string{args[0], "--version"}
		}
	}
	return append(append(out, flags...), positional...)
}

// reorderCommandArgs splits the words after a command's name into its
// flags (with their values) and the rest, which starts with "--" when any
// positional argument follows one, so that a positional argument never
// reads as a flag.
func reorderCommandArgs(cmd *cli.Command, words []string) (flags, positional []string) {
	for j := 0; j < len(words); j++ {
		w := words[j]
		switch {
		case w == "--":
			if rest := words[j+1:]; len(rest) > 0 {
				positional = append(positional, rest...)
				return flags, append([]string{"--"}, positional...)
			}
			return flags, positional
		case !isFlagWord(w):
			positional = append(positional, w)
		default:
			flags = append(flags, w)
			if takesValue(cmd, w) && j+1 < len(words) {
				j++
				flags = append(flags, words[j])
			}
		}
	}
	return flags, positional
}

// isFlagWord says whether the flag package reads w as a flag: a dash and
// more ("-" alone is an argument, the conventional name of stdin).
func isFlagWord(w string) bool {
	return len(w) > 1 && w[0] == '-'
}

// hasFlag says whether the flag word w names a flag of cmd.
func hasFlag(cmd *cli.Command, w string) bool {
	name, _, _ := strings.Cut(strings.TrimLeft(w, "-"), "=")
	for _, f := range cmd.Flags {
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}

// takesValue says whether the flag word w ("-m", "--model", not
// "--model=x") names a flag of cmd that reads the next word as its value.
// Unknown flags are taken as booleans; the parser rejects them anyway.
func takesValue(cmd *cli.Command, w string) bool {
	name := strings.TrimLeft(w, "-")
	if strings.Contains(name, "=") {
		return false
	}
	for _, f := range cmd.Flags {
		for _, n := range f.Names() {
			if n == name {
				df, ok := f.(cli.DocGenerationFlag)
				return ok && df.TakesValue()
			}
		}
	}
	return false
}
