package api

import (
	_ "embed"
	"fmt"

	"github.com/getkin/kin-openapi/openapi3"
)

//go:embed openapi.yaml
var specYAML []byte

// Spec parses and validates the API's OpenAPI document.
func Spec() (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromData(specYAML)
	if err != nil {
		return nil, fmt.Errorf("load OpenAPI document: %w", err)
	}
	if err := doc.Validate(openapi3.NewLoader().Context); err != nil {
		return nil, fmt.Errorf("OpenAPI document is invalid: %w", err)
	}
	return doc, nil
}

// SpecJSON is the OpenAPI document as JSON, as served at
// /api/v1/openapi.json.
func SpecJSON() ([]byte, error) {
	doc, err := Spec()
	if err != nil {
		return nil, err
	}
	return doc.MarshalJSON()
}
