package server

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWebAssets checks how the page and its files are served: without the
// API key, with their media types, the security headers and entity tags,
// and that other paths stay what they were.
func TestWebAssets(t *testing.T) {
	ts := startServer(t, 1, 128, Options{})
	noKey := func(method, path string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, ts.ts.URL+path, nil)
		require.NoError(t, err)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, body := doRaw(t, req)
		return resp, body
	}

	tests := []struct {
		path, contentType, contains string
	}{
		{"/", "text/html; charset=utf-8", `<script src="/web/app.js" defer></script>`},
		{"/web/app.js", "text/javascript; charset=utf-8", "readEvents"},
		{"/web/app.css", "text/css; charset=utf-8", "#messages"},
		{"/web/favicon.svg", "image/svg+xml", "<svg"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, body := noKey(http.MethodGet, tt.path, nil)
			require.Equal(t, http.StatusOK, resp.StatusCode, body)
			assert.Equal(t, tt.contentType, resp.Header.Get("Content-Type"))
			assert.Contains(t, body, tt.contains)
			assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
			csp := resp.Header.Get("Content-Security-Policy")
			assert.Contains(t, csp, "default-src 'self'")
			assert.Contains(t, csp, "script-src 'self';")
			assert.NotContains(t, csp, "unsafe-inline")
			assert.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
			etag := resp.Header.Get("ETag")
			require.Regexp(t, `^"[0-9a-f]{24}"$`, etag)

			resp, body = noKey(http.MethodGet, tt.path, map[string]string{"If-None-Match": etag})
			assert.Equal(t, http.StatusNotModified, resp.StatusCode)
			assert.Empty(t, body)
		})
	}

	// The page has no inline script or style for the policy to refuse.
	_, page := noKey(http.MethodGet, "/", nil)
	assert.NotRegexp(t, `<script>|<style|\sstyle=|\son[a-z]+=`, page)

	// Everything else keeps needing the key, or stays 404/405.
	resp, _ := noKey(http.MethodGet, "/v1/models", nil)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, _ = noKey(http.MethodHead, "/", nil) // ollama's heartbeat: under the key as before
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, _ = noKey(http.MethodGet, "/web/nope.js", nil)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	code, _, body := ts.get(t, "/web/nope.js")
	assert.Equal(t, http.StatusNotFound, code, "%s", body)
	code, _, body = ts.get(t, "/index.html")
	assert.Equal(t, http.StatusNotFound, code, "%s", body)
	code, hdr, body := ts.post(t, "/", "{}")
	assert.Equal(t, http.StatusMethodNotAllowed, code, "%s", body)
	assert.Equal(t, "GET, HEAD", hdr.Get("Allow"))
	req, err := http.NewRequest(http.MethodHead, ts.ts.URL+"/", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, _ = doRaw(t, req)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}

func doRaw(t testing.TB, req *http.Request) (*http.Response, string) {
	t.Helper()
	code, hdr, body := do(t, req)
	return &http.Response{StatusCode: code, Header: hdr}, string(body)
}

// envRequireBrowser names the environment variable that, set to 1, turns
// a missing Chromium from a skip into a failure (set in .ci/run).
const envRequireBrowser = "M40LLM_REQUIRE_BROWSER"

// envScreenshot names the environment variable that, when set, is the
// PNG file TestWebBrowser writes a screenshot of the page to (the one in
// docs/web-chat.png comes from it).
const envScreenshot = "M40LLM_WEB_SCREENSHOT"

// chromium returns the path of a Chromium binary, or skips the test (fails
// it with M40LLM_REQUIRE_BROWSER=1).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no chromium binary on PATH (Debian: apt-get install chromium)"
	if os.Getenv(envRequireBrowser) == "1" {
		t.Fatalf("%s, and %s=1 requires the browser test", msg, envRequireBrowser)
	}
	t.Skipf("%s; set %s=1 to make this a failure", msg, envRequireBrowser)
	return ""
}

// browserPage drives one headless Chromium tab.
type browserPage struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string // exceptions and security messages of the page
}

// newBrowser starts headless Chromium, closed at the end of the test, and
// collects the page's exceptions and security messages.
func newBrowser(t *testing.T) *browserPage {
	t.Helper()
	path := chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.WindowSize(1100, 760),
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run as root with its sandbox
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	p := &browserPage{t: t, ctx: ctx}

	// The first call starts the browser and lives as long as it, so it
	// takes no timeout of its own: it is bounded from outside, by
	// cancelling the tab.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		require.NoError(t, err, "start the browser")
	case <-time.After(60 * time.Second):
		cancelTab()
		t.Fatal("the browser did not start within 60s")
	}
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return // the tab is closed
			}
			if m.IsException() || m.Source == "security" || m.Source == "javascript" {
				p.mu.Lock()
				p.problems = append(p.problems, m.String())
				p.mu.Unlock()
			}
		}
	}()
	return p
}

// do runs steps within timeout, failing the test with what when they fail
// or time out.
func (p *browserPage) do(timeout time.Duration, what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	require.NoError(p.t, chromedp.Do(ctx, steps...), what)
}

// wait polls the JavaScript expression js until it is true, for at most
// timeout.
func (p *browserPage) wait(timeout time.Duration, what, js string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](js,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	require.NoError(p.t, err, "%s (waiting for %s)", what, js)
}

// eval evaluates js in the page and decodes its value.
func eval[T any](p *browserPage, js string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	require.NoError(p.t, err, "evaluate %s", js)
	return v
}

// setField replaces the value of the input or text area with the id by
// typing.
func (p *browserPage) setField(id, value string) {
	p.t.Helper()
	eval[chromedp.Void](p, fmt.Sprintf(`document.getElementById(%q).value = ''`, id))
	p.do(10*time.Second, "type into "+id, chromedp.SendKeys(chromedp.ID(id), value))
}

// click clicks the element with the id.
func (p *browserPage) click(id string) {
	p.t.Helper()
	p.do(10*time.Second, "click "+id, chromedp.Click(chromedp.ID(id)))
}

// checkProblems fails the test if the page threw or broke its policy.
func (p *browserPage) checkProblems() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	assert.Empty(p.t, p.problems, "exceptions or security messages from the page")
}

const (
	jsReady    = `document.body.dataset.ready === 'true'`
	jsLast     = `(document.querySelector('#messages .msg.assistant:last-of-type .body') || {textContent: ''}).textContent`
	jsIdle     = `document.body.dataset.busy === 'false' && !document.getElementById('send').disabled && document.getElementById('stop').hidden`
	jsLastStat = `document.querySelector('#messages .msg:last-child .stats').textContent`
	jsBodies   = `[...document.querySelectorAll('#messages .msg .body')].map(e => e.textContent)`
)

// TestWebBrowser drives the page in headless Chromium against a real
// server on the bundled model, run with an API key: the page asks for the
// key, streams a reply, stops a long one, restores the conversation after
// a reload, shows HTML in a reply as text, and starts a new chat.
func TestWebBrowser(t *testing.T) {
	p := newBrowser(t)
	ts := startServer(t, 2, 512, Options{})
	ts.be.delay.Store(int64(25 * time.Millisecond)) // ~40 tokens/s: the reply visibly streams

	p.do(30*time.Second, "load the page", chromedp.Navigate(ts.ts.URL+"/"))

	// The API needs the key: the page asks, refuses a wrong one, keeps the right one.
	p.wait(15*time.Second, "the key dialog opens", `document.getElementById('key-dialog').open`)
	p.setField("key-input", "wrong-key")
	p.click("key-ok")
	p.wait(15*time.Second, "the key is refused", `document.getElementById('key-dialog').open &&
		document.getElementById('key-message').textContent.includes('incorrect API key')`)
	p.setField("key-input", testKey)
	p.click("key-ok")
	p.wait(15*time.Second, "the models load", jsReady+` && !document.getElementById('key-dialog').open`)
	assert.Equal(t, modelName, eval[string](p, `document.getElementById('model').value`))
	assert.Equal(t, testKey, eval[string](p, `JSON.parse(localStorage.getItem('m40llm.apiKey'))`))

	// A reply streams: its text grows while it is being generated.
	p.setField("system", "You tell short stories.")
	p.setField("max_tokens", "48")
	p.setField("seed", "7")
	p.do(10*time.Second, "type and send with Enter", chromedp.SendKeys(chromedp.ID("input"), "Tell me a story\n"))
	p.wait(20*time.Second, "the reply starts", jsLast+`.length > 0`)
	first := eval[struct {
		State string `json:"state"`
		Len   int    `json:"len"`
	}](p, `({state: document.querySelector('#messages .msg:last-child').dataset.state, len: `+jsLast+`.length})`)
	assert.Equal(t, "streaming", first.State, "the reply was already done when first seen")
	p.wait(20*time.Second, "the reply grows", fmt.Sprintf(`%s.length > %d`, jsLast, first.Len))
	p.wait(30*time.Second, "the reply ends", jsIdle)
	stat := eval[string](p, jsLastStat)
	assert.Regexp(t, `^\d+ tokens · [\d.]+ tok/s · context \d+ / 512 \(\d+%\)`, stat)
	if out := os.Getenv(envScreenshot); out != "" {
		ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		cancel()
		require.NoError(t, err, "screenshot")
		require.NoError(t, os.WriteFile(out, png, 0o644))
		t.Logf("screenshot: %s (%d bytes)", out, len(png))
	}

	// Stop ends a long reply; the server ends its job; the page is usable again.
	p.setField("max_tokens", "4096")
	p.setField("input", "Tell me a long story")
	p.click("send")
	p.wait(20*time.Second, "the long reply starts", jsLast+`.length > 20 && !document.getElementById('stop').hidden`)
	p.click("stop")
	p.wait(10*time.Second, "the page is idle again", jsIdle)
	assert.Contains(t, eval[string](p, jsLastStat), "stopped")
	stopped := eval[string](p, jsLast)
	require.Eventually(t, func() bool { return ts.srv.sched.count() == 0 }, 10*time.Second, 10*time.Millisecond,
		"the server still runs the stopped request")
	time.Sleep(200 * time.Millisecond) // no timing is measured: the text just must not change any more
	assert.Equal(t, stopped, eval[string](p, jsLast), "the stopped reply kept growing")

	p.setField("max_tokens", "6")
	p.do(10*time.Second, "send again", chromedp.SendKeys(chromedp.ID("input"), "And then?\n"))
	p.wait(30*time.Second, "the third reply ends", jsIdle+` && document.querySelectorAll('#messages .msg').length === 6`)
	assert.Contains(t, eval[string](p, jsLastStat), "tok")

	// A reload restores the conversation and the settings, without asking for the key.
	before := eval[[]string](p, jsBodies)
	require.Len(t, before, 6)
	p.do(20*time.Second, "reload", chromedp.Reload())
	p.wait(15*time.Second, "the reloaded page is ready", jsReady)
	assert.Equal(t, before, eval[[]string](p, jsBodies))
	assert.Equal(t, "You tell short stories.|6|false", eval[string](p, `document.getElementById('system').value + '|' +
		document.getElementById('max_tokens').value + '|' + document.getElementById('key-dialog').open`))

	// Every control has a label; Shift+Enter does not send.
	assert.True(t, eval[bool](p, `[...document.querySelectorAll('input, select, textarea')].every(e => e.labels.length > 0)`),
		"a control without a label")
	p.setField("input", "draft")
	assert.Equal(t, "6|draft", eval[string](p, `(() => {
		const input = document.getElementById('input');
		input.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', shiftKey: true, bubbles: true, cancelable: true}));
		return document.querySelectorAll('#messages .msg').length + '|' + input.value;
	})()`))

	// HTML in a reply (or a message) is shown as text; Markdown still renders.
	const attack = `<img src=x onerror="window.__xss=1">`
	conv := fmt.Sprintf(`{"messages": [
		{"role": "user", "content": %q},
		{"role": "assistant", "content": %q}]}`,
		`<img src=x onerror=window.__xss=2>`,
		"Here: "+attack+" and **<img src=x onerror=window.__xss=3>** `<b>code</b>`\n\n"+
			"```html\n<img src=x onerror=window.__xss=4>\n```\n"+
			"<script>window.__xss=5</script>\n[ok](https://example.com/) [bad](javascript:window.__xss=6)\n"+
			"- <svg onload=window.__xss=7>")
	eval[chromedp.Void](p, fmt.Sprintf(`localStorage.setItem('m40llm.chat', %q)`, conv))
	p.do(20*time.Second, "reload", chromedp.Reload())
	p.wait(15*time.Second, "the reloaded page is ready", jsReady)
	shown := eval[struct {
		Imgs, Scripts, Svgs, Links, Strong, Code int
		Href, Text                               string
		XSS                                      any
	}](p, `(() => {
		const m = document.getElementById('messages');
		return {
			Imgs: document.querySelectorAll('img').length,
			Scripts: document.querySelectorAll('script').length,
			Svgs: m.querySelectorAll('svg').length,
			Links: m.querySelectorAll('a').length,
			Strong: m.querySelectorAll('strong').length,
			Code: m.querySelectorAll('pre code').length,
			Href: (m.querySelector('a') || {}).href || '',
			Text: m.textContent,
			XSS: window.__xss === undefined ? null : window.__xss,
		};
	})()`)
	assert.Zero(t, shown.Imgs, "an img element was created")
	assert.Equal(t, 1, shown.Scripts, "only app.js")
	assert.Zero(t, shown.Svgs)
	assert.Nil(t, shown.XSS, "script from the conversation ran")
	assert.Contains(t, shown.Text, attack)
	assert.Contains(t, shown.Text, "<img src=x onerror=window.__xss=2>")
	assert.Contains(t, shown.Text, "<script>window.__xss=5</script>")
	assert.Equal(t, 1, shown.Links, "only the https link")
	assert.Equal(t, "https://example.com/", shown.Href)
	assert.Equal(t, 1, shown.Strong)
	assert.Equal(t, 1, shown.Code)

	// New chat empties the conversation, on the page and in storage.
	p.click("new-chat")
	left := eval[struct {
		Msgs   int
		Stored any
	}](p, `({Msgs: document.querySelectorAll('#messages .msg').length, Stored: localStorage.getItem('m40llm.chat')})`)
	assert.Zero(t, left.Msgs)
	assert.Nil(t, left.Stored)
	p.checkProblems()
}
