package apiproxy

import (
	"net/http"
	"strings"
)

// browserHeader names the first header in h that only browsers send:
// Origin (cross-origin requests and every WebSocket handshake a page
// opens) and the Fetch Metadata headers (Sec-Fetch-*). kubectl and
// client-go send neither. A tailnet user's browser carries their tailnet
// identity, so a web page they open must not reach the proxy through it.
func browserHeader(h http.Header) string {
	if _, ok := h["Origin"]; ok {
		return "Origin"
	}
	for k := range h {
		if strings.HasPrefix(k, "Sec-Fetch-") {
			return k
		}
	}
	return ""
}
