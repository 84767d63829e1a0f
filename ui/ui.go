// Package ui is lbd's web console: static HTML, CSS and JavaScript
// modules embedded in the binary (no CDN, no build step), served under
// /ui/ by lbd serve. The page logs in with the API token and talks to the
// REST API like any client; this package only serves files, with a
// Content-Security-Policy that allows no inline script and no other
// origin.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var static embed.FS

// CSP is the Content-Security-Policy of every answer: scripts, styles,
// images and connections from this origin only, no inline script or
// style, no framing, no plugins.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the console's files for paths under /ui/.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix("/ui", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		// the files change with the binary: revalidate (cheap, same host)
		h.Set("Cache-Control", "no-cache")
		if !strings.HasPrefix(r.URL.Path, "/ui/") {
			http.Redirect(w, r, "/ui/", http.StatusFound)
			return
		}
		files.ServeHTTP(w, r)
	})
}
