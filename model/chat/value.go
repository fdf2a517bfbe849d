package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/ardanlabs/jinja"
)

// maxDepth bounds the nesting of an Extra value.
const maxDepth = 512

// toValue converts an Extra value for the template engine: jinja.Value as
// is, anything else through its JSON encoding, so that structs convert by
// their json tags and a json.RawMessage keeps its key order.
func toValue(v any) (jinja.Value, error) {
	switch x := v.(type) {
	case jinja.Value:
		return x, nil
	case nil:
		return jinja.None(), nil
	case string:
		return jinja.NewString(x), nil
	case bool:
		return jinja.NewBool(x), nil
	case json.RawMessage:
		return decodeJSON(x, nil)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return jinja.Undefined(), err
	}
	return decodeJSON(b, nil)
}

// decodeJSON converts the JSON text b, keeping the order of object keys,
// with f (when not nil) applied to every string, keys included.
func decodeJSON(b []byte, f func(string) string) (jinja.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if f == nil {
		f = func(s string) string { return s }
	}
	v, err := decodeValue(dec, 0, f)
	if err != nil {
		return jinja.Undefined(), err
	}
	if _, err := dec.Token(); err != io.EOF {
		return jinja.Undefined(), errors.New("trailing data after JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder, depth int, f func(string) string) (jinja.Value, error) {
	if depth > maxDepth {
		return jinja.Undefined(), fmt.Errorf("JSON nested deeper than %d", maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return jinja.Undefined(), err
	}
	switch t := tok.(type) {
	case nil:
		return jinja.None(), nil
	case bool:
		return jinja.NewBool(t), nil
	case string:
		return jinja.NewString(f(t)), nil
	case json.Number:
		return jinja.FromGoValue(t), nil
	case json.Delim:
		switch t {
		case '{':
			d := jinja.NewDict()
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return jinja.Undefined(), err
				}
				v, err := decodeValue(dec, depth+1, f)
				if err != nil {
					return jinja.Undefined(), err
				}
				d.AsDict().Set(f(k.(string)), v)
			}
			_, err := dec.Token() // '}'
			return d, err
		case '[':
			var items []jinja.Value
			for dec.More() {
				v, err := decodeValue(dec, depth+1, f)
				if err != nil {
					return jinja.Undefined(), err
				}
				items = append(items, v)
			}
			_, err := dec.Token() // ']'
			return jinja.NewList(items), err
		}
	}
	return jinja.Undefined(), fmt.Errorf("unexpected JSON token %v", tok)
}
