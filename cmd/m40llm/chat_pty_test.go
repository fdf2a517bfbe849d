package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/m40llm/m40llm/internal/fixture"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ptyWait bounds every wait of a terminal test: for output, and for the
// process to exit. Nothing in these tests takes more than a second or two
// on a loaded machine; the bound only keeps a failure from hanging.
const ptyWait = 30 * time.Second

// ptyChat is m40llm chat on the bundled model, run as a process of its own
// on a pseudo-terminal, as a user at a terminal runs it.
type ptyChat struct {
	t     *testing.T
	cmd   *exec.Cmd
	tty   *os.File // the terminal's master side
	cache string   // the process's XDG_CACHE_HOME

	mu     sync.Mutex
	out    []byte // all output so far
	seen   int    // out[:seen] was matched by expect
	closed bool   // the terminal reads no more

	exited chan struct{}
	code   int // exit status, once exited is closed
}

// startChat starts chat with the CPU backend and args, and waits for its
// first prompt.
func startChat(t *testing.T, args ...string) *ptyChat {
	t.Helper()
	return startChatCmd(t, func(*exec.Cmd) {}, args...)
}

// startChatCmd is startChat with setup changing the command before it
// starts (its standard streams left nil are the terminal).
func startChatCmd(t *testing.T, setup func(*exec.Cmd), args ...string) *ptyChat {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("no pseudo-terminals on Windows")
	}
	p := &ptyChat{t: t, cache: t.TempDir(), exited: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], append([]string{"chat", "-m", fixture.BundledModel(t), "--backend", "cpu", "-t", "1"}, args...)...)
	p.cmd.Env = append(os.Environ(), execMainEnv+"=1", "XDG_CACHE_HOME="+p.cache, "HOME="+p.cache, "TERM=xterm", "M40LLM_MODEL=")
	setup(p.cmd)
	tty, err := pty.StartWithSize(p.cmd, &pty.Winsize{Rows: 50, Cols: 250})
	require.NoError(t, err)
	p.tty = tty
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := tty.Read(b)
			p.mu.Lock()
			p.out = append(p.out, b[:n]...)
			if err != nil {
				p.closed = true
			}
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() {
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		select {
		case <-p.exited:
		case <-time.After(ptyWait):
			t.Errorf("chat did not exit after SIGKILL")
		}
		tty.Close()
	})
	p.expect(promptFirst)
	return p
}

// send types s.
func (p *ptyChat) send(s string) {
	p.t.Helper()
	_, err := p.tty.WriteString(s)
	require.NoError(p.t, err)
}

// expect waits for want in the output not yet matched and returns the
// output up to the end of want, with carriage returns removed; it fails
// the test when want does not come within ptyWait. Each newline of want
// matches the terminal's "\r\n".
func (p *ptyChat) expect(want string) string {
	p.t.Helper()
	want = strings.ReplaceAll(want, "\n", "\r\n")
	deadline := time.Now().Add(ptyWait)
	for {
		p.mu.Lock()
		if i := bytes.Index(p.out[p.seen:], []byte(want)); i >= 0 {
			got := string(p.out[p.seen : p.seen+i+len(want)])
			p.seen += i + len(want)
			p.mu.Unlock()
			return strings.ReplaceAll(got, "\r", "")
		}
		rest, closed := string(p.out[p.seen:]), p.closed
		p.mu.Unlock()
		if closed || time.Now().After(deadline) {
			p.t.Fatalf("waiting for %q in the output of chat; after the last match it printed %q", want, rest)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// expectMore waits for n more bytes of output and returns them.
func (p *ptyChat) expectMore(n int) string {
	p.t.Helper()
	deadline := time.Now().Add(ptyWait)
	for {
		p.mu.Lock()
		if len(p.out)-p.seen >= n {
			got := string(p.out[p.seen : p.seen+n])
			p.seen += n
			p.mu.Unlock()
			return got
		}
		rest, closed := string(p.out[p.seen:]), p.closed
		p.mu.Unlock()
		if closed || time.Now().After(deadline) {
			p.t.Fatalf("waiting for %d bytes of output; got %q", n, rest)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wait waits for the process to exit and returns its status.
func (p *ptyChat) wait() int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(ptyWait):
		p.t.Fatalf("chat did not exit; its output: %q", p.output())
	}
	return -1
}

// output returns all output so far.
func (p *ptyChat) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.out)
}

// reference is the reply of m40llm run to one prompt in a new
// conversation, with args; a chat with the same settings must give the
// same reply to the same conversation.
func reference(t *testing.T, prompt string, args ...string) string {
	t.Helper()
	out, errs, code := runCLI(t, "", append([]string{"run", fixture.BundledModel(t), prompt, "--backend", "cpu"}, args...)...)
	require.Equal(t, 0, code, errs)
	require.NotEqual(t, "\n", out, "the reference reply is empty")
	return out
}

// The reply to a typed line; Up recalls a line of the history (it is not
// sent to the model as an escape sequence); Ctrl-C at the prompt clears
// the line and says how to exit, and the next line is answered; Ctrl-D
// on an empty line exits 0.
func TestChatTerminalKeys(t *testing.T) {
	flags := []string{"--temp", "0", "-n", "16"}
	hello, story := reference(t, "hello", flags...), reference(t, "Once upon a time", flags...)
	require.NotEqual(t, hello, story, "the two prompts need different replies")

	p := startChat(t, flags...)
	p.send("hello\r")
	assert.Contains(t, p.expect(hello), "hello\n"+hello, "the reply to the line typed")
	p.expect(promptFirst)

	p.send("/reset\r")
	p.expect("Cleared the conversation.")
	p.send("\x1b[A\x1b[A") // Up twice: /reset, then hello
	p.expect(promptFirst + "hello")
	p.send("\r")
	p.expect(hello) // as the first time: the conversation was reset
	p.expect(promptFirst)
	p.send("/reset\r")
	p.expect("Cleared the conversation.")

	p.send("Once upon")
	p.expect(promptFirst + "Once upon")
	p.send("\x03")
	p.expect(exitHint)
	p.send("Once upon a time\r")
	assert.NotContains(t, p.expect(story), "Once uponOnce", "Ctrl-C dropped the line typed before it")
	p.expect(promptFirst)

	p.send("\x04")
	assert.Equal(t, 0, p.wait(), p.output())
	assert.NotContains(t, p.output(), "^[[A")
	assert.Equal(t, 2, strings.Count(p.output(), "m40llm: "), "no line from m40llm but the backend's and the template's")

	hist, err := os.ReadFile(filepath.Join(p.cache, "m40llm", "chat_history"))
	require.NoError(t, err)
	assert.Equal(t, "hello\n/reset\nhello\n/reset\nOnce upon a time\n", string(hist), "the history file")
	if st, err := os.Stat(filepath.Join(p.cache, "m40llm", "chat_history")); assert.NoError(t, err) {
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	}
}

// Ctrl-C during a reply stops it and returns to the prompt; the stopped
// reply and its message are not part of the conversation, so that the
// next reply is that of a new conversation.
func TestChatTerminalInterruptReply(t *testing.T) {
	const n = "12"
	want := reference(t, "Once upon a time", "--temp", "0", "-n", n, "--ignore-eos")
	// 8000 tokens past end of turn take the CPU backend seconds: the reply
	// is still running when Ctrl-C comes.
	p := startChat(t, "--temp", "0", "-n", "8000", "-c", "8192", "--ignore-eos")
	p.send("hello\r")
	p.expect("hello\n")
	p.expectMore(8) // some of the reply
	// Ctrl-S stops the terminal's output, so that the reply cannot end
	// before Ctrl-C (SIGINT) stops it; Ctrl-Q starts the output again.
	p.send("\x13")
	p.send("\x03\x11")
	p.expect(promptFirst)
	p.send("/set num_predict " + n + "\r")
	p.expect("Set num_predict to " + n + ".")
	p.send("/show\r")
	assert.Contains(t, p.expect("messages)"), "context in use       0 of 8192 tokens (0 messages)")
	p.send("Once upon a time\r")
	p.expect("Once upon a time\n")
	assert.Equal(t, want, p.expect(want), "the reply after the stopped one is that of a new conversation")
	p.send("/bye\r")
	assert.Equal(t, 0, p.wait(), p.output())
}

// The commands at a terminal: /help, /set temperature 0 (the replies are
// then greedy), /reset confirmed, /show, an unknown command, a """ block
// as one message, /bye.
func TestChatTerminalCommands(t *testing.T) {
	block := "Once upon a time\nthere was a cat"
	greedy := reference(t, "hello", "--temp", "0", "-n", "16")
	multi := reference(t, block, "--temp", "0", "-n", "16")

	p := startChat(t, "-n", "16", "--temp", "1.5")
	p.send("/help\r")
	help := p.expect(`put it in a """ block.`)
	for _, c := range []string{"/set", "/show", "/reset", "/clear", "/bye", "/help, /?"} {
		assert.Contains(t, help, c)
	}
	p.send("/set temperature 0\r")
	p.expect("Set temperature to 0.")
	for range 2 {
		p.send("hello\r")
		p.expect("hello\n")
		assert.Equal(t, greedy, p.expect(greedy), "greedy after /set temperature 0")
		p.send("/reset\r")
		p.expect("Cleared the conversation.")
	}
	p.send("/show\r")
	info := p.expect("messages)")
	for _, field := range []string{"architecture         llama", "parameters           292.80 K",
		"quantization         all F32 (guessed)", "context length       2048", "context in use       0 of 2048 tokens"} {
		assert.Contains(t, info, field)
	}
	p.send("/set top_p 2\r")
	p.expect("m40llm: /set top_p 2: must be in (0, 1] (1 turns top-p off)\n")
	p.send("/frobnicate\r")
	p.expect("m40llm: unknown command /frobnicate; /help lists commands\n")

	p.send(`"""Once upon a time` + "\r")
	p.expect(promptMore)
	p.send(`there was a cat"""` + "\r")
	p.expect("there was a cat\"\"\"\n")
	assert.Equal(t, multi, p.expect(multi), `the """ block is one message`)

	p.send("/bye\r")
	assert.Equal(t, 0, p.wait(), p.output())
}

// With standard input not a terminal, chat reads plain lines: no escape
// codes, commands and """ blocks as on a terminal, errors on one line, and
// nothing after /bye is read.
func TestChatPipedCommands(t *testing.T) {
	greedy := reference(t, "hello", "--temp", "0", "-n", "8")
	multi := reference(t, "a\nb", "--temp", "0", "-n", "8")
	in := strings.Join([]string{
		"/help", "/set temperature 0", "/set temperature hot", "/set top_k 1.5", "/set num_predict 0",
		"/set nonsense 1", "/show", "/nope", "hello", "/reset", `"""a`, `b"""`, "/bye", "never sent",
	}, "\n") + "\n"
	out, errs, code := runCLI(t, in, "chat", "-m", fixture.BundledModel(t), "--backend", "cpu", "-n", "8")
	require.Equal(t, 0, code, errs)
	assert.Equal(t, greedy+multi, out, "two replies: hello, then the block")
	assert.NotContains(t, out+errs, "\x1b")
	assert.NotContains(t, errs, promptFirst)
	for _, line := range []string{
		"Set temperature to 0.",
		"m40llm: /set temperature hot: want a number",
		"m40llm: /set top_k 1.5: want a whole number",
		"m40llm: /set num_predict 0: want -1 (until the end of the turn) or a positive whole number",
		"m40llm: /set nonsense: no such parameter; /help set lists them",
		"m40llm: unknown command /nope; /help lists commands",
		"Cleared the conversation.",
	} {
		assert.Contains(t, strings.Split(errs, "\n"), line)
	}
}

// The end of piped input inside a """ block sends nothing and says so.
func TestChatPipedUnendedBlock(t *testing.T) {
	out, errs, code := runCLI(t, "\"\"\"a\nb\n", "chat", "-m", fixture.BundledModel(t), "--backend", "cpu", "-n", "4")
	require.Equal(t, 0, code, errs)
	assert.Empty(t, out)
	assert.Contains(t, errs, `the input ended inside a """ block, which was not sent`)
}

// SIGTERM at the prompt ends the chat (exit 0) and gives the terminal
// back its settings.
func TestChatTerminalSIGTERM(t *testing.T) {
	p := startChat(t)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, 0, p.wait(), p.output())
}

// With stderr redirected away from the terminal ("chat 2>log") the
// prompt, the echo and the commands' output go to stdout, the terminal;
// the load messages stay on stderr.
func TestChatTerminalStderrRedirected(t *testing.T) {
	greedy := reference(t, "hello", "--temp", "0", "-n", "8")
	var stderr lockedBuffer
	p := startChatCmd(t, func(cmd *exec.Cmd) { cmd.Stderr = &stderr }, "--temp", "0", "-n", "8")
	p.send("/reset\r")
	p.expect("Cleared the conversation.")
	p.send("hello\r")
	p.expect(promptFirst + "hello\n")
	assert.Equal(t, greedy, p.expect(greedy))
	p.send("/bye\r")
	assert.Equal(t, 0, p.wait(), p.output())
	assert.Contains(t, stderr.String(), "m40llm: backend cpu")
	assert.NotContains(t, stderr.String(), promptFirst)
}
