package gguf

import (
	"fmt"
	"math"
)

// ValueType is the type tag of a GGUF metadata value (gguf_type).
type ValueType uint32

// The 13 GGUF metadata value types. Numeric values are part of the format.
const (
	ValueUint8   ValueType = 0
	ValueInt8    ValueType = 1
	ValueUint16  ValueType = 2
	ValueInt16   ValueType = 3
	ValueUint32  ValueType = 4
	ValueInt32   ValueType = 5
	ValueFloat32 ValueType = 6
	ValueBool    ValueType = 7
	ValueString  ValueType = 8
	ValueArray   ValueType = 9
	ValueUint64  ValueType = 10
	ValueInt64   ValueType = 11
	ValueFloat64 ValueType = 12
)

var valueTypeNames = [...]string{
	ValueUint8: "u8", ValueInt8: "i8", ValueUint16: "u16", ValueInt16: "i16",
	ValueUint32: "u32", ValueInt32: "i32", ValueFloat32: "f32", ValueBool: "bool",
	ValueString: "str", ValueArray: "arr", ValueUint64: "u64", ValueInt64: "i64",
	ValueFloat64: "f64",
}

// valueSizes holds the encoded size of fixed-size scalar types; 0 for
// strings and arrays.
var valueSizes = [...]int{
	ValueUint8: 1, ValueInt8: 1, ValueUint16: 2, ValueInt16: 2,
	ValueUint32: 4, ValueInt32: 4, ValueFloat32: 4, ValueBool: 1,
	ValueUint64: 8, ValueInt64: 8, ValueFloat64: 8,
}

func (t ValueType) valid() bool { return t <= ValueFloat64 }

// String returns the short name used by gguf-py and `m40llm inspect`
// ("u32", "str", "arr", ...).
func (t ValueType) String() string {
	if t.valid() {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("value_type(%d)", uint32(t))
}

// Value is one metadata value. Its dynamic content is one of:
// uint8, int8, uint16, int16, uint32, int32, float32, bool, string, uint64,
// int64, float64 for scalars, or Array for ValueArray.
type Value struct {
	typ ValueType
	v   any
}

// Array is a metadata array. Data holds a slice of the element type:
// []uint8, []int8, []uint16, []int16, []uint32, []int32, []float32, []bool,
// []string, []uint64, []int64, []float64, or []Array for nested arrays.
type Array struct {
	Type ValueType
	Data any
}

// Len returns the number of elements.
func (a Array) Len() int {
	switch d := a.Data.(type) {
	case []uint8:
		return len(d)
	case []int8:
		return len(d)
	case []uint16:
		return len(d)
	case []int16:
		return len(d)
	case []uint32:
		return len(d)
	case []int32:
		return len(d)
	case []float32:
		return len(d)
	case []bool:
		return len(d)
	case []string:
		return len(d)
	case []uint64:
		return len(d)
	case []int64:
		return len(d)
	case []float64:
		return len(d)
	case []Array:
		return len(d)
	}
	return 0
}

// arrayDataType returns the element type that a typed slice encodes.
func arrayDataType(data any) (ValueType, bool) {
	switch data.(type) {
	case []uint8:
		return ValueUint8, true
	case []int8:
		return ValueInt8, true
	case []uint16:
		return ValueUint16, true
	case []int16:
		return ValueInt16, true
	case []uint32:
		return ValueUint32, true
	case []int32:
		return ValueInt32, true
	case []float32:
		return ValueFloat32, true
	case []bool:
		return ValueBool, true
	case []string:
		return ValueString, true
	case []uint64:
		return ValueUint64, true
	case []int64:
		return ValueInt64, true
	case []float64:
		return ValueFloat64, true
	case []Array:
		return ValueArray, true
	}
	return 0, false
}

// Index returns element i as a Value.
func (a Array) Index(i int) Value {
	switch d := a.Data.(type) {
	case []uint8:
		return Value{ValueUint8, d[i]}
	case []int8:
		return Value{ValueInt8, d[i]}
	case []uint16:
		return Value{ValueUint16, d[i]}
	case []int16:
		return Value{ValueInt16, d[i]}
	case []uint32:
		return Value{ValueUint32, d[i]}
	case []int32:
		return Value{ValueInt32, d[i]}
	case []float32:
		return Value{ValueFloat32, d[i]}
	case []bool:
		return Value{ValueBool, d[i]}
	case []string:
		return Value{ValueString, d[i]}
	case []uint64:
		return Value{ValueUint64, d[i]}
	case []int64:
		return Value{ValueInt64, d[i]}
	case []float64:
		return Value{ValueFloat64, d[i]}
	case []Array:
		return Value{ValueArray, d[i]}
	}
	panic("gguf: Array.Index on an empty Array")
}

// NewValue wraps a Go value as a metadata Value. v must be one of the types
// listed on Value, or a slice of them (which becomes an Array), or an Array.
// Plain int becomes int32 and plain float64 stays float64.
func NewValue(v any) (Value, error) {
	switch x := v.(type) {
	case uint8:
		return Value{ValueUint8, x}, nil
	case int8:
		return Value{ValueInt8, x}, nil
	case uint16:
		return Value{ValueUint16, x}, nil
	case int16:
		return Value{ValueInt16, x}, nil
	case uint32:
		return Value{ValueUint32, x}, nil
	case int32:
		return Value{ValueInt32, x}, nil
	case int:
		if x < math.MinInt32 || x > math.MaxInt32 {
			return Value{ValueInt64, int64(x)}, nil
		}
		return Value{ValueInt32, int32(x)}, nil
	case float32:
		return Value{ValueFloat32, x}, nil
	case bool:
		return Value{ValueBool, x}, nil
	case string:
		return Value{ValueString, x}, nil
	case uint64:
		return Value{ValueUint64, x}, nil
	case int64:
		return Value{ValueInt64, x}, nil
	case float64:
		return Value{ValueFloat64, x}, nil
	case Array:
		return Value{ValueArray, x}, nil
	}
	if t, ok := arrayDataType(v); ok {
		return Value{ValueArray, Array{t, v}}, nil
	}
	return Value{}, fmt.Errorf("gguf: cannot store a %T as a metadata value", v)
}

// MustValue is NewValue for values known to be valid; it panics otherwise.
// It is meant for literals in tests and generators.
func MustValue(v any) Value {
	val, err := NewValue(v)
	if err != nil {
		panic(err)
	}
	return val
}

// Type returns the value's type tag.
func (v Value) Type() ValueType { return v.typ }

// Any returns the dynamic content (see Value).
func (v Value) Any() any { return v.v }

// Uint returns an integer value of any width as uint64. ok is false for
// non-integers and for negative values.
func (v Value) Uint() (uint64, bool) {
	switch x := v.v.(type) {
	case uint8:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	case int8, int16, int32, int64:
		i, _ := v.Int()
		if i < 0 {
			return 0, false
		}
		return uint64(i), true
	}
	return 0, false
}

// Int returns an integer value of any width as int64. ok is false for
// non-integers and for a uint64 above math.MaxInt64.
func (v Value) Int() (int64, bool) {
	switch x := v.v.(type) {
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	}
	return 0, false
}

// Float returns a float32 or float64 value as float64.
func (v Value) Float() (float64, bool) {
	switch x := v.v.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// String returns a string value. For other types it returns a short
// description, so Value satisfies fmt.Stringer.
func (v Value) String() string {
	if s, ok := v.v.(string); ok {
		return s
	}
	if a, ok := v.v.(Array); ok {
		return fmt.Sprintf("[%s x %d]", a.Type, a.Len())
	}
	return fmt.Sprint(v.v)
}

// Array returns an array value.
func (v Value) Array() (Array, bool) {
	a, ok := v.v.(Array)
	return a, ok
}
