package server

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"time"
)

// The web chat page: one HTML file at / and its script, style sheet and
// icon under /web/, embedded in the binary (server/web/). The page talks
// to the API routes of the same server: GET /v1/models for the model
// picker, GET /api/ps for the context size, POST /v1/chat/completions
// streamed for the replies. Nothing is fetched from elsewhere.
//
// The page and its assets are answered without the API key (see
// webPublic), so that a browser can load the page and ask for the key;
// the API calls the page makes need the key as any client's do.

//go:embed web
var webFiles embed.FS

// webCSP is the Content-Security-Policy of the page: everything from the
// server itself, no inline script or style, no plugins, no framing, and
// Trusted Types required for script sinks (innerHTML and the like), which
// the page never uses: model output reaches the page only as text nodes.
const webCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; " +
	"require-trusted-types-for 'script'; trusted-types 'none'"

// webAsset is one embedded file with its media type and entity tag.
type webAsset struct {
	body        []byte
	contentType string
	etag        string
}

// webAssets maps the URL paths of the page to their files.
var webAssets = loadWebAssets()

// loadWebAssets reads the embedded files: index.html is served at /, the
// others at /web/NAME.
func loadWebAssets() map[string]*webAsset {
	types := map[string]string{
		".html": "text/html; charset=utf-8",
		".js":   "text/javascript; charset=utf-8",
		".css":  "text/css; charset=utf-8",
		".svg":  "image/svg+xml",
	}
	assets := map[string]*webAsset{}
	entries, _ := fs.ReadDir(webFiles, "web") // embedded: cannot fail
	for _, e := range entries {
		ct, ok := types[path.Ext(e.Name())]
		if !ok || e.IsDir() {
			continue
		}
		body, _ := webFiles.ReadFile("web/" + e.Name())
		sum := sha256.Sum256(body)
		a := &webAsset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		if e.Name() == "index.html" {
			assets["/"] = a
		} else {
			assets["/web/"+e.Name()] = a
		}
	}
	return assets
}

// webPublic reports whether r asks for the page or one of its assets,
// which are answered without the API key. Only GET, and only the exact
// paths of the embedded files: HEAD / stays ollama's heartbeat, under the
// key as before.
func webPublic(r *http.Request) bool {
	return r.Method == http.MethodGet && webAssets[r.URL.Path] != nil
}

// webRoutes registers the page at / (that path only: others stay 404)
// and its assets under /web/.
func (s *Server) webRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", s.serveWebAsset)
	mux.HandleFunc("GET /web/{name}", s.serveWebAsset)
}

// serveWebAsset answers one embedded file with its media type, the
// page's security headers and an entity tag; the browser revalidates it
// on each load (Cache-Control: no-cache) and gets 304 while it has not
// changed. An unknown name gets 404.
func (s *Server) serveWebAsset(w http.ResponseWriter, r *http.Request) {
	a := webAssets[r.URL.Path]
	if a == nil {
		s.writeError(w, r, &Error{Status: http.StatusNotFound, Type: TypeInvalidRequest, Code: "not_found",
			Message: fmt.Sprintf("no route %s %s", r.Method, r.URL.Path)})
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Content-Security-Policy", webCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
