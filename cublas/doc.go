// Package cublas binds the few cuBLAS calls m40llm uses (handles, streams,
// GemmEx, and the library's version) at run time through purego, without
// cgo.
//
// [Load] finds the library (see [Sonames] for the order and why); a
// [*Library] makes [*Handle]s. cuBLAS works on the CUDA context current on
// the calling thread, so create handles and call them inside
// cudadrv.Context.Do, like every other driver call.
//
// Failed calls return a [*CallError] wrapping a [Status]; arguments refused
// before cuBLAS is called wrap [ErrInvalidValue]. errors.Is(err,
// cublas.ErrNotSupported) and the other Status constants work through
// wrapping.
//
// Matrices are column-major, as in the C API. Callers with row-major data
// write the column-major reading of each call (op, m, n, k, lda) next to it.
package cublas
