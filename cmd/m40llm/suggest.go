package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// closest returns the candidate nearest to s, or "" when none is near
// enough to be what was meant: at most one edit (insertion, deletion,
// substitution or swap of neighbours) per three letters of s, at least
// one (none for a single letter: every other letter is one edit away), else a candidate that s starts (--temperature → --temp) or that
// starts with s (--ctx → --ctx-size; with three letters or more this wins over
// an edit: --ctx is not --ctk). Ties go to the earlier candidate.
func closest(s string, candidates []string) string {
	s = strings.ToLower(s)
	limit := max(1, len(s)/3)
	if len(s) == 1 {
		limit = 0
	}
	best, bestScore := "", limit+2
	for _, c := range candidates {
		lc := strings.ToLower(c)
		score := editDistance(s, lc)
		if score > limit {
			score = limit + 2
			if len(s) >= 2 && len(lc) >= 3 && (strings.HasPrefix(lc, s) || strings.HasPrefix(s, lc)) {
				score = limit + 1
			}
		}
		if len(s) >= 3 && strings.HasPrefix(lc, s) {
			score = 0 // a flag s begins wins: --ctx is --ctx-size, not --ctk
		}
		if score < bestScore {
			best, bestScore = c, score
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// the Levenshtein distance with a swap of two neighbouring letters
// counted as one edit, the most common typing mistake.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// d[i][j] is the distance between ra[:i] and rb[:j].
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// commandNames lists the names and aliases of the app's commands, help
// among them.
func commandNames(app *cli.App) []string {
	var names []string
	for _, c := range app.Commands {
		if !c.Hidden {
			names = append(names, c.Names()...)
		}
	}
	return append(names, "help")
}

// checkCommand refuses, as a usage error (exit 2) naming the closest
// command, a command line whose command (or the command after "help") is
// not one of the app's. args is the command line as reorderArgs takes it.
func checkCommand(app *cli.App, args []string) error {
	i := 1
	for i < len(args) && isFlagWord(args[i]) {
		i++
	}
	if i >= len(args) || args[i] == "--" {
		return nil
	}
	name := args[i]
	if name == "help" || name == "h" {
		if i+1 >= len(args) || isFlagWord(args[i+1]) {
			return nil
		}
		name = args[i+1]
	}
	if app.Command(name) != nil {
		return nil
	}
	if s := closest(name, commandNames(app)); s != "" {
		return usageErrorf("unknown command %q; did you mean %q?", name, s)
	}
	var names []string
	for _, c := range app.Commands {
		if !c.Hidden {
			names = append(names, c.Name)
		}
	}
	return usageErrorf("unknown command %q (commands: %s; see m40llm --help)", name, strings.Join(names, ", "))
}

// undefinedFlagPrefix starts the flag package's error for a flag that the
// command does not have.
const undefinedFlagPrefix = "flag provided but not defined: -"

// flagUsageError turns the parser's error for an unknown flag into one
// line naming the closest flag of the command; other errors pass through.
func flagUsageError(c *cli.Context, err error, isSubcommand bool) error {
	name, ok := strings.CutPrefix(err.Error(), undefinedFlagPrefix)
	if !ok {
		return err
	}
	where := "m40llm"
	var flags []cli.Flag
	if c.Command != nil {
		flags = c.Command.Flags
		if isSubcommand {
			where += " " + c.Command.Name
		}
	}
	var names []string
	for _, f := range flags {
		names = append(names, f.Names()...)
	}
	if s := closest(name, names); s != "" {
		return fmt.Errorf("unknown flag %s for %s; did you mean %s?", dashed(name), where, dashed(s))
	}
	return fmt.Errorf("unknown flag %s for %s (see %s --help)", dashed(name), where, where)
}

// dashed writes a flag name as it is typed: -m, --model.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}
