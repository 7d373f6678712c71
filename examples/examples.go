// Package examples embeds the example manifests, which the sandbox uses
// and tests apply to the test API server.
package examples

import "embed"

// FS holds the examples.
//
//go:embed *.yaml *.json
var FS embed.FS
