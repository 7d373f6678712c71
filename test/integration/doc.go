// Package integration holds the tests that need a real kube-apiserver and
// etcd (and some an in-process tailnet or network namespaces): the
// webhook called by the API server over TLS, the controllers reconciling
// against it, the key broker's TokenReviews, certificate rotation, the
// golden cases replayed through the API server, tsinject check against it.
// The controllers' step tests against fake clients live beside each
// controller; these are what a fake client cannot show. make test runs
// them; make unit skips them (test/tier).
package integration
