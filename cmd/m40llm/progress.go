package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress reports a long byte-counted task: a progress bar on a terminal,
// a plain line every few seconds otherwise (logs, pipes, CI).
type progress struct {
	w     io.Writer
	label string
	total int64
	bar   *progressbar.ProgressBar
	last  time.Time
	start time.Time
	cur   int64
}

// newProgress starts reporting a task of total bytes to w.
func newProgress(w io.Writer, label string, total int64) *progress {
	p := &progress{w: w, label: label, total: total, start: time.Now(), last: time.Now()}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(label),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}
	return p
}

// update records done of total bytes.
func (p *progress) update(done, total int64) {
	p.cur = done
	if p.bar != nil {
		_ = p.bar.Set64(done)
		return
	}
	if time.Since(p.last) >= 5*time.Second {
		p.last = time.Now()
		fmt.Fprintf(p.w, "m40llm: %s: %s of %s (%.0f%%)\n", p.label, humanBytes(done), humanBytes(total), 100*float64(done)/float64(max(total, 1)))
	}
}

// done ends the report.
func (p *progress) done() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
