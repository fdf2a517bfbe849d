// Package cudadrv binds the CUDA driver API (libcuda.so.1) at run time
// through purego, without cgo and without a CUDA toolkit.
//
// # Loading
//
// [Init] opens the driver library, resolves the versioned entry points
// (cuMemAlloc_v2, cuMemcpyHtoD_v2, ...) and calls cuInit. Every other
// function fails with [ErrNotInitialized] until Init has succeeded. [Discover]
// wraps Init and gathers what `m40llm devices` prints. A machine without a GPU
// is an ordinary outcome: the error says why (a [*LoadError] listing the
// paths tried, [ErrNoDevice], [ErrStubLibrary], a [*DriverTooOldError]).
//
// # Threads and contexts
//
// A CUDA context is current per OS thread, and goroutines move between
// threads. The rule in this package is therefore: every call that needs a
// context (memory, modules, streams, launches, graphs, events) runs inside
// [Context.Do]. A [Context] owns one goroutine locked to its OS thread, makes
// the device's primary context current there once, and runs the closures
// passed to Do one at a time on that thread. Do may be called from any number
// of goroutines; it is re-entrant, so code already running inside Do may call
// functions that call Do again. Calling a context-dependent function outside
// Do fails with CUDA_ERROR_INVALID_CONTEXT or, worse, uses whatever context
// the current thread happens to have: don't. Submit whole units of work (a
// decode step) as one closure rather than one per kernel.
//
// Device discovery ([DeviceCount], [Device] and its attributes,
// [DriverVersion]) needs no context.
//
// # Graphs
//
// [Stream.Capture] records the work a closure enqueues on a stream into a
// CUDA graph and instantiates it; replaying the [GraphExec] costs a
// fraction of launching its kernels one by one.
//
// # Errors
//
// A failing driver call returns a [*CallError] naming the function, which
// wraps the [Result]; errors.Is(err, cudadrv.ErrOutOfMemory) and the other
// Result constants work through any %w wrapping. Messages carry the driver's
// own cuGetErrorName and cuGetErrorString text.
//
// # Memory
//
// Device memory is a [DevicePtr], a plain address: the driver never sees Go
// pointers it could keep. Host memory passed to synchronous copies may be Go
// memory; asynchronous copies need page-locked memory from [MemAllocHost].
//
// The package builds on every platform; outside linux Init returns
// [ErrNotSupported].
package cudadrv
