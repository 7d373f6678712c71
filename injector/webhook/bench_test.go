package webhook_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// BenchmarkAdmission is one typical pod through the HTTP handler, as the
// API server sends it; compare with BenchmarkAdmissionNoop's floor.
func BenchmarkAdmission(b *testing.B) {
	srv := server()
	body := review(seedPods(b)[0], "shop")
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/inject-pod", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		srv.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}

// BenchmarkAdmissionNoop is the floor: controller-runtime's decoding and
// encoding around a handler that allows everything.
func BenchmarkAdmissionNoop(b *testing.B) {
	srv := &admission.Webhook{Handler: admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Allowed("")
	})}
	body := review(seedPods(b)[0], "shop")
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/inject-pod", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		srv.ServeHTTP(rec, req)
	}
}
