package node_test

import (
	"encoding/json"
	"testing"
)

// TestOpenAPIDocumentHasAVersion: the served OpenAPI document names the
// API and its version (it said "version not set").
func TestOpenAPIDocumentHasAVersion(t *testing.T) {
	n := startNode(t, nil)
	code, body := httpDo(t, "GET", "http://"+n.HTTPAddr.String()+"/openapi.json", "")
	var doc struct {
		Info struct{ Title, Version string } `json:"info"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &doc) != nil {
		t.Fatalf("GET /openapi.json: %d %.200s", code, body)
	}
	if doc.Info.Version != "v1" || doc.Info.Title != "Herald API" {
		t.Fatalf("info = %+v, want title \"Herald API\", version v1", doc.Info)
	}
}
