package api

import (
	"embed"
	"io/fs"
	"net/http"
	"path"

	"github.com/gin-gonic/gin"
)

// webFiles is the web client (api/web): plain files, no build step.
//
//go:embed web
var webFiles embed.FS

// webCSP lets the page run only its own script and style and talk only to
// this origin; nothing may frame it.
const webCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

var webTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// handleWeb serves the web client's file name (index.html at /).
func handleWeb(name string) gin.HandlerFunc {
	return func(c *gin.Context) {
		file := name
		if file == "" {
			file = path.Clean(c.Param("file"))[1:]
		}
		typ, ok := webTypes[path.Ext(file)]
		data, err := fs.ReadFile(webFiles, "web/"+file)
		if !ok || err != nil {
			fail(c, errNotFound("no such file"))
			return
		}
		h := c.Writer.Header()
		h.Set("Content-Security-Policy", webCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-cache")
		c.Data(http.StatusOK, typ, data)
	}
}
