// Package ptx holds m40llm's CUDA kernels: the .cu sources, one per op
// family, and the artifacts built from them offline, embedded with go:embed.
//
// Each NAME.cu becomes NAME.fatbin (native sm_52 code for the Tesla M40 plus
// compute_52 PTX that the driver JIT-compiles on newer GPUs) and NAME.ptx
// (the same PTX as text, read by tests). zkernels.go, written by the
// generator, embeds them and records the nvcc version and each source's
// sha256; TestArtifactsMatchSources fails when a source changed without
// regenerating. Regenerate with nvcc 11.x or 12.x (CUDA 13 cannot target
// sm_52):
//
//	go generate ./ptx
//
// The generator runs, for each NAME.cu,
//
//	nvcc -Xptxas -v -fatbin -O3 -gencode arch=compute_52,code=sm_52 -gencode arch=compute_52,code=compute_52 -o NAME.fatbin NAME.cu
//	nvcc -ptx -O3 -arch=compute_52 -o NAME.ptx NAME.cu
//
// (-Xptxas -v prints each kernel's registers, shared memory and spills, and
// is recorded in the fatbin; zkernels.go keeps both commands as run). The
// fatbin step assembles the sm_52 code with ptxas, so a kernel that does
// not build for the M40 fails the generation.
//
// [Load] loads every module into a cudadrv.Context and resolves the kernels
// listed in kernelTable, the Go-side record of each kernel's name and
// parameter list that launches are checked against (and that a test checks
// against the PTX).
//
// # Matrix products
//
// The one operation the model needs, with its layout (row-major, k
// innermost):
//
//	Y[n, m] = X[n, k] · W[m, k]ᵀ
//	W: FP16, m rows of k (ggml ne=[k, m]); X: FP32, n rows of k; Y: FP32, n rows of m
//
// is the [GEMM] interface. [*Kernels] implements it with the built-in
// kernels (FP16 storage, FP32 arithmetic, exact FP32 activations): the
// matvec kernels of [Kernels.MatVec] for up to [MatVecMaxN] rows of X
// (decode), which read every weight once for all rows, and a tiled kernel
// for more (prompt processing). [*BLAS] implements it with cuBLAS GemmEx,
// which first rounds X to FP16 (see its documentation for the precision
// trade-off). The decode path also calls [Kernels.MatVec] and
// [Kernels.GateUp] directly, for their fused forms (three products sharing
// X; the gate and up products with SwiGLU).
//
// # KV cache
//
// [KVCache] addresses one layer of the cache; its KType and VType
// ([CacheType]: f16, the zero value, f32, q8_0, q4_0, in ggml's block
// layouts) pick the kernels of [Kernels.KVAppend], [Kernels.RopeAppend],
// [Kernels.AttnDecode] and [Kernels.AttnPrefill]: FP16 keys and values use
// the kernels of rope.cu and attention.cu, every other pair those of
// kvcache.cu, which quantize on the way in exactly as gguf.Quantize does
// and read the blocks with FP32 arithmetic.
package ptx

//go:generate go run ../tools/ptxgen -v
