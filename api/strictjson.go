package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
)

// Request bodies are checked against the OpenAPI document before they
// are decoded, because encoding/json is lenient where the document is
// not: it matches keys in any case, takes the last of duplicate keys and
// lets null through for booleans, numbers and objects. The check walks
// the body's tokens and refuses, with the JSON field and the JSON type
// expected:
//   - a key the schema does not have (keys are case-sensitive),
//   - a key given twice,
//   - null where the schema is not nullable,
//   - a value of the wrong JSON type (an integer must be written as one:
//     no fraction, no exponent).
// Values (enums, ranges, required fields) are left to the validation
// that follows, which answers 422 with the field at fault.

// bodySchemas maps "METHOD /path/{param}" to the JSON request body schema
// of that operation in openapi.yaml.
var bodySchemas = sync.OnceValues(func() (map[string]*openapi3.Schema, error) {
	doc, err := Spec()
	if err != nil {
		return nil, err
	}
	out := map[string]*openapi3.Schema{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.RequestBody == nil || op.RequestBody.Value == nil {
				continue
			}
			if mt := op.RequestBody.Value.Content.Get("application/json"); mt != nil && mt.Schema != nil {
				out[method+" "+path] = mt.Schema.Value
			}
		}
	}
	return out, nil
})

var echoParam = regexp.MustCompile(`:([A-Za-z0-9_]+)`)

// bodySchema returns the schema of the body of an echo route (method and
// path such as /api/v1/vips/:vip), or nil when the document has none.
func bodySchema(method, route string) *openapi3.Schema {
	m, err := bodySchemas()
	if err != nil {
		return nil // Spec() is checked by New: unreachable
	}
	return m[method+" "+echoParam.ReplaceAllString(route, "{$1}")]
}

// fieldError is a body that does not fit the document, with the field at
// fault (dotted, with [i] for array items; "" for the body itself).
type fieldError struct {
	Field string
	Msg   string
}

func (e *fieldError) Error() string { return e.Msg }

// checkJSON checks one JSON value in body against schema (nil: any
// value but null) and that nothing follows it.
func checkJSON(body []byte, schema *openapi3.Schema) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	w := walker{dec: dec}
	if err := w.value("", schema); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &fieldError{Msg: "body has data after the JSON value"}
	}
	return nil
}

type walker struct{ dec *json.Decoder }

func (w *walker) token() (json.Token, error) {
	tok, err := w.dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, &fieldError{Msg: "body is not valid JSON: " + err.Error()}
	}
	return tok, nil
}

func (w *walker) value(field string, s *openapi3.Schema) error {
	tok, err := w.token()
	if err != nil {
		return err
	}
	want := schemaType(s)
	got := ""
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			got = "object"
		case '[':
			got = "array"
		default:
			return &fieldError{Field: field, Msg: fmt.Sprintf("body is not valid JSON: unexpected %q", t)}
		}
	case nil:
		if s != nil && s.Nullable {
			return nil
		}
		return typeError(field, want, "null")
	case string:
		got = "string"
	case bool:
		got = "boolean"
	case json.Number:
		got = "number"
		if want == "integer" {
			if !isJSONInteger(string(t)) {
				return &fieldError{Field: field, Msg: fmt.Sprintf("%s must be an integer (digits only, no fraction or exponent), not %s", fieldName(field), t)}
			}
			got = "integer"
		}
	}
	if want != "" && want != got && !(want == "number" && got == "integer") {
		return typeError(field, want, got)
	}
	switch got {
	case "object":
		return w.object(field, s)
	case "array":
		var items *openapi3.Schema
		if s != nil && s.Items != nil {
			items = s.Items.Value
		}
		for i := 0; w.dec.More(); i++ {
			if err := w.value(fmt.Sprintf("%s[%d]", field, i), items); err != nil {
				return err
			}
		}
		_, err := w.token() // ]
		return err
	}
	return nil
}

func (w *walker) object(field string, s *openapi3.Schema) error {
	seen := map[string]bool{}
	for w.dec.More() {
		tok, err := w.token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		sub := join(field, key)
		if seen[key] {
			return &fieldError{Field: sub, Msg: fmt.Sprintf("%s is given twice: give each field once", fieldName(sub))}
		}
		seen[key] = true
		var ks *openapi3.Schema
		if s != nil {
			if p := s.Properties[key]; p != nil {
				ks = p.Value
			} else if ap := s.AdditionalProperties; ap.Schema != nil {
				ks = ap.Schema.Value
			} else if ap.Has != nil && !*ap.Has {
				return unknownField(field, key, s)
			}
		}
		if err := w.value(sub, ks); err != nil {
			return err
		}
	}
	_, err := w.token() // }
	return err
}

// unknownField refuses a key, with the right spelling when only its case
// was wrong.
func unknownField(field, key string, s *openapi3.Schema) error {
	sub := join(field, key)
	for name := range s.Properties {
		if strings.EqualFold(name, key) {
			return &fieldError{Field: sub, Msg: fmt.Sprintf("unknown field %q: field names are case-sensitive: write %q", sub, join(field, name))}
		}
	}
	names := make([]string, 0, len(s.Properties))
	for name, p := range s.Properties {
		if p.Value == nil || !p.Value.ReadOnly {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return &fieldError{Field: sub, Msg: fmt.Sprintf("unknown field %q: the fields here are %s", sub, strings.Join(names, ", "))}
}

func schemaType(s *openapi3.Schema) string {
	if s == nil || s.Type == nil || len(*s.Type) != 1 {
		return ""
	}
	return (*s.Type)[0]
}

func isJSONInteger(n string) bool {
	n = strings.TrimPrefix(n, "-")
	return n != "" && strings.Trim(n, "0123456789") == ""
}

var article = map[string]string{
	"object": "an object", "array": "an array", "string": "a string", "integer": "an integer",
	"number": "a number", "boolean": "a boolean (true or false)", "null": "null",
}

func typeError(field, want, got string) error {
	if want == "" {
		return &fieldError{Field: field, Msg: fmt.Sprintf("%s must not be null: leave it out instead", fieldName(field))}
	}
	msg := fmt.Sprintf("%s must be %s, not %s", fieldName(field), article[want], article[got])
	if got == "null" && field != "" {
		msg += ": leave it out to keep the default"
	}
	return &fieldError{Field: field, Msg: msg}
}

func fieldName(field string) string {
	if field == "" {
		return "the body"
	}
	return fmt.Sprintf("field %q", field)
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

// jsonType names the JSON type a Go type decodes from, for the errors of
// encoding/json (never a Go type name).
func jsonType(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return jsonType(t.Elem())
	case reflect.Bool:
		return article["boolean"]
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return fmt.Sprintf("an integer from %d to %d", -(int64(1) << (t.Bits() - 1)), int64(1)<<(t.Bits()-1)-1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprintf("an integer from 0 to %d", uint64(1)<<t.Bits()-1)
	case reflect.Float32, reflect.Float64:
		return article["number"]
	case reflect.String:
		return article["string"]
	case reflect.Slice, reflect.Array:
		return article["array"]
	case reflect.Struct, reflect.Map:
		return article["object"]
	}
	return "a value"
}
