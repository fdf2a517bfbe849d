package gguf

import (
	"errors"
	"fmt"
)

// ErrKeyNotFound is matched (errors.Is) by the *KeyError a typed accessor
// returns when the key is absent.
var ErrKeyNotFound = errors.New("metadata key not found")

// KeyError reports a metadata key that is missing or has a different type
// than the caller asked for.
type KeyError struct {
	Key  string
	Want string    // what the caller asked for ("string", "unsigned integer", ...)
	Got  ValueType // the stored type; meaningless when Missing
	// Missing is true when the key does not exist.
	Missing bool
	// Detail is set for values of the right type that are still unusable
	// (a negative count, an out-of-range integer).
	Detail string
}

func (e *KeyError) Error() string {
	switch {
	case e.Missing:
		return fmt.Sprintf("gguf: metadata key %q not found", e.Key)
	case e.Detail != "":
		return fmt.Sprintf("gguf: metadata key %q: %s", e.Key, e.Detail)
	}
	return fmt.Sprintf("gguf: metadata key %q is %s, want %s", e.Key, e.Got, e.Want)
}

// Is makes errors.Is(err, ErrKeyNotFound) true for a missing key.
func (e *KeyError) Is(target error) bool { return target == ErrKeyNotFound && e.Missing }

// KV is one metadata entry.
type KV struct {
	Key   string
	Value Value
}

// Metadata is the ordered set of key/value pairs of a GGUF file. File order
// is kept so that a file can be written back byte for byte.
type Metadata struct {
	kvs   []KV
	index map[string]int
}

// Len returns the number of entries.
func (m *Metadata) Len() int { return len(m.kvs) }

// KVs returns the entries in file order. The slice must not be modified.
func (m *Metadata) KVs() []KV { return m.kvs }

// Lookup returns the value stored under key.
func (m *Metadata) Lookup(key string) (Value, bool) {
	i, ok := m.index[key]
	if !ok {
		return Value{}, false
	}
	return m.kvs[i].Value, true
}

// Has reports whether key is present.
func (m *Metadata) Has(key string) bool {
	_, ok := m.index[key]
	return ok
}

// reserve makes room for n more entries, so that a parse of n entries
// allocates the entry slice and the index once.
func (m *Metadata) reserve(n int) {
	if m.index == nil {
		m.index = make(map[string]int, n)
	}
	if cap(m.kvs)-len(m.kvs) < n {
		m.kvs = append(make([]KV, 0, len(m.kvs)+n), m.kvs...)
	}
}

// Set adds key, or replaces its value in place when it exists.
func (m *Metadata) Set(key string, v Value) {
	if m.index == nil {
		m.index = make(map[string]int)
	}
	if i, ok := m.index[key]; ok {
		m.kvs[i].Value = v
		return
	}
	m.index[key] = len(m.kvs)
	m.kvs = append(m.kvs, KV{key, v})
}

// SetAny is Set(key, NewValue(v)).
func (m *Metadata) SetAny(key string, v any) error {
	val, err := NewValue(v)
	if err != nil {
		return fmt.Errorf("metadata key %q: %w", key, err)
	}
	m.Set(key, val)
	return nil
}

// Delete removes key if present, keeping the order of the others.
func (m *Metadata) Delete(key string) {
	i, ok := m.index[key]
	if !ok {
		return
	}
	m.kvs = append(m.kvs[:i], m.kvs[i+1:]...)
	delete(m.index, key)
	for j := i; j < len(m.kvs); j++ {
		m.index[m.kvs[j].Key] = j
	}
}

func (m *Metadata) get(key, want string) (Value, error) {
	v, ok := m.Lookup(key)
	if !ok {
		return Value{}, &KeyError{Key: key, Want: want, Missing: true}
	}
	return v, nil
}

// String returns the string stored under key.
func (m *Metadata) String(key string) (string, error) {
	v, err := m.get(key, "string")
	if err != nil {
		return "", err
	}
	s, ok := v.v.(string)
	if !ok {
		return "", &KeyError{Key: key, Want: "string", Got: v.typ}
	}
	return s, nil
}

// Uint returns a non-negative integer of any stored width.
func (m *Metadata) Uint(key string) (uint64, error) {
	v, err := m.get(key, "unsigned integer")
	if err != nil {
		return 0, err
	}
	u, ok := v.Uint()
	if !ok {
		if _, isInt := v.Int(); isInt {
			return 0, &KeyError{Key: key, Got: v.typ, Detail: fmt.Sprintf("negative value %v", v.v)}
		}
		return 0, &KeyError{Key: key, Want: "unsigned integer", Got: v.typ}
	}
	return u, nil
}

// Uint32 is Uint limited to the uint32 range.
func (m *Metadata) Uint32(key string) (uint32, error) {
	u, err := m.Uint(key)
	if err != nil {
		return 0, err
	}
	if u > 1<<32-1 {
		return 0, &KeyError{Key: key, Detail: fmt.Sprintf("value %d does not fit in 32 bits", u)}
	}
	return uint32(u), nil
}

// Int returns an integer of any stored width as int64.
func (m *Metadata) Int(key string) (int64, error) {
	v, err := m.get(key, "integer")
	if err != nil {
		return 0, err
	}
	i, ok := v.Int()
	if !ok {
		if _, isUint := v.Uint(); isUint {
			return 0, &KeyError{Key: key, Got: v.typ, Detail: fmt.Sprintf("value %v does not fit in int64", v.v)}
		}
		return 0, &KeyError{Key: key, Want: "integer", Got: v.typ}
	}
	return i, nil
}

// Float returns a float32 or float64 value as float64.
func (m *Metadata) Float(key string) (float64, error) {
	v, err := m.get(key, "float")
	if err != nil {
		return 0, err
	}
	f, ok := v.Float()
	if !ok {
		return 0, &KeyError{Key: key, Want: "float", Got: v.typ}
	}
	return f, nil
}

// Bool returns a bool value.
func (m *Metadata) Bool(key string) (bool, error) {
	v, err := m.get(key, "bool")
	if err != nil {
		return false, err
	}
	b, ok := v.v.(bool)
	if !ok {
		return false, &KeyError{Key: key, Want: "bool", Got: v.typ}
	}
	return b, nil
}

// Array returns an array value of any element type.
func (m *Metadata) Array(key string) (Array, error) {
	v, err := m.get(key, "array")
	if err != nil {
		return Array{}, err
	}
	a, ok := v.v.(Array)
	if !ok {
		return Array{}, &KeyError{Key: key, Want: "array", Got: v.typ}
	}
	return a, nil
}

func arrayOf[T any](m *Metadata, key, want string) ([]T, error) {
	a, err := m.Array(key)
	if err != nil {
		return nil, err
	}
	s, ok := a.Data.([]T)
	if !ok {
		return nil, &KeyError{Key: key, Want: want, Got: ValueArray,
			Detail: fmt.Sprintf("array of %s, want %s", a.Type, want)}
	}
	return s, nil
}

// Strings returns an array of strings. The slice is shared, not copied.
func (m *Metadata) Strings(key string) ([]string, error) {
	return arrayOf[string](m, key, "array of str")
}

// Float32s returns an array of f32. The slice is shared, not copied.
func (m *Metadata) Float32s(key string) ([]float32, error) {
	return arrayOf[float32](m, key, "array of f32")
}

// Int32s returns an array of i32. The slice is shared, not copied.
func (m *Metadata) Int32s(key string) ([]int32, error) {
	return arrayOf[int32](m, key, "array of i32")
}
