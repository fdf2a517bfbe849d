package ptx

import (
	"fmt"

	"github.com/m40llm/m40llm/cudadrv"
)

// image is one embedded module (from zkernels.go).
type image struct {
	name   string // NAME of NAME.cu
	fatbin []byte // sm_52 SASS + compute_52 PTX
	ptx    string // the PTX alone, as text
}

// kernelID indexes kernelTable.
type kernelID int

const (
	kGemm kernelID = iota
	kConvertF32F16
	kEmbed
	kSwiGLU
	kAdd
	kAddBias
	kGatherRows
	kRMSNorm
	kAddRMSNorm
	kHeadRMSNorm
	kRopeTable
	kRope
	kKVAppend
	kRopeAppend
	kAttnDecode
	kAttnPrefill8
	kAttnPrefill16
	kAttnPrefill32
	kAttnPrefill64
	kAttnPrefill128
	kMatvec1
	kMatvec2
	kMatvec4
	kMatvec8
	kMatvec16
	kGateUp1
	kGateUp2
	kGateUp4
	kGateUp8
	kGateUp16
	kTopK
	// kQuant is the first of the quant.cu kernels: quantKernels per type,
	// in QuantType order (see quantKernel).
	kQuant
	// The kvcache.cu kernels follow the quant.cu ones: kvKernels per pair
	// of cache types (see kvKernel), some of them absent (no name).
	numKernels = kQuant + kernelID(numQuantTypes)*quantKernels + kernelID(numCacheTypes*numCacheTypes)*kvKernels
)

// kernelSpec is the Go side of a kernel's signature. params has one letter
// per parameter: 'p' a pointer (PTX .u64), 'i' an int (.u32), 'f' a float
// (.f32). TestKernelTableMatchesPTX checks it against the embedded PTX, and
// launch checks every call against it.
type kernelSpec struct {
	module string
	name   string
	params string
}

var kernelTable = [numKernels]kernelSpec{
	kGemm:          {"gemm", "gemm_f16w_f32", "pppiii"},
	kConvertF32F16: {"gemm", "convert_f32_f16", "ppi"},

	kEmbed:       {"elementwise", "embed_f16", "pppii"},
	kSwiGLU:      {"elementwise", "swiglu_f32", "pppi"},
	kAdd:         {"elementwise", "add_f32", "ppi"},
	kAddBias:     {"elementwise", "add_bias_f32", "ppii"},
	kGatherRows:  {"elementwise", "gather_rows_f32", "pppii"},
	kRMSNorm:     {"norm", "rmsnorm_f32", "pppif"},
	kAddRMSNorm:  {"norm", "add_rmsnorm_f32", "ppppif"},
	kHeadRMSNorm: {"norm", "head_rmsnorm_f32", "ppiiif"},
	kRopeTable:   {"rope", "rope_table", "pppiif"},
	kRope:        {"rope", "rope_f32", "ppiiiii"},
	kKVAppend:    {"rope", "kv_append", "ppppppiiii"},
	kRopeAppend:  {"rope", "rope_append", "ppppppppiiiiiiii"},

	kAttnDecode:     {"attention", "attn_decode", "ppppppppiiiiiiiif"},
	kAttnPrefill8:   {"attention", "attn_prefill_h8", "ppppppiiiif"},
	kAttnPrefill16:  {"attention", "attn_prefill_h16", "ppppppiiiif"},
	kAttnPrefill32:  {"attention", "attn_prefill_h32", "ppppppiiiif"},
	kAttnPrefill64:  {"attention", "attn_prefill_h64", "ppppppiiiif"},
	kAttnPrefill128: {"attention", "attn_prefill_h128", "ppppppiiiif"},

	kMatvec1:  {"matvec", "matvec_f16_n1", "ppppppppppiiiii"},
	kMatvec2:  {"matvec", "matvec_f16_n2", "ppppppppppiiiii"},
	kMatvec4:  {"matvec", "matvec_f16_n4", "ppppppppppiiiii"},
	kMatvec8:  {"matvec", "matvec_f16_n8", "ppppppppppiiiii"},
	kMatvec16: {"matvec", "matvec_f16_n16", "ppppppppppiiiii"},
	kGateUp1:  {"matvec", "gateup_f16_n1", "pppppiii"},
	kGateUp2:  {"matvec", "gateup_f16_n2", "pppppiii"},
	kGateUp4:  {"matvec", "gateup_f16_n4", "pppppiii"},
	kGateUp8:  {"matvec", "gateup_f16_n8", "pppppiii"},
	kGateUp16: {"matvec", "gateup_f16_n16", "pppppiii"},

	kTopK: {"topk", "topk_pass", "ppppiii"},
	// The quant.cu kernels are filled in by quant.go's init.
}

// Kernels is the set of embedded kernels loaded into one context.
type Kernels struct {
	ctx     *cudadrv.Context
	modules []*cudadrv.Module
	fns     [numKernels]cudadrv.Function
	mode    LoadMode
}

// LoadMode says how the driver got code for the device.
type LoadMode struct {
	// Native is true when the embedded sm_52 code runs, on the devices for
	// which cudadrv.DeviceInfo.NativeCode holds (the Tesla M40 class);
	// otherwise the driver JIT-compiled the compute_52 PTX.
	Native bool
	// BinaryVersion is the architecture of the code that runs, 10*major +
	// minor (52 native; 90 after JIT on an H100), from cuFuncGetAttribute.
	BinaryVersion int
	// PTXVersion is the virtual architecture of the PTX (52).
	PTXVersion int
}

// String describes the mode: "native sm_52" or "PTX JIT compute_52 → sm_90".
func (m LoadMode) String() string {
	if m.Native {
		return fmt.Sprintf("native sm_%d", m.BinaryVersion)
	}
	return fmt.Sprintf("PTX JIT compute_%d → sm_%d", m.PTXVersion, m.BinaryVersion)
}

// Load loads every embedded module into ctx and resolves the kernels. On
// devices outside the M40 class (cudadrv.DeviceInfo.NativeCode) the first
// load JIT-compiles the PTX (cached by the driver afterwards).
//
// Failures, wrapped with the module or kernel name: a *cudadrv.ModuleError
// from a module that does not load (with the JIT log;
// cudadrv.ErrUnsupportedPTXVersion when the driver is older than
// cudadrv.PTXDriverVersion on a device that needs the JIT), a missing
// kernel (cudadrv.ErrNotFound), or a failed device or function attribute
// query. Nothing stays loaded after a failure.
func Load(ctx *cudadrv.Context) (*Kernels, error) {
	k := &Kernels{ctx: ctx}
	err := ctx.Do(func() error {
		if err := k.load(); err != nil {
			k.unload()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return k, nil
}

// load does Load's work inside Do; on failure the caller unloads what it
// loaded.
func (k *Kernels) load() error {
	mods := map[string]*cudadrv.Module{}
	for _, img := range images {
		m, err := cudadrv.ModuleLoadData(img.fatbin)
		if err != nil {
			return fmt.Errorf("ptx: load module %s: %w", img.name, err)
		}
		k.modules = append(k.modules, m)
		mods[img.name] = m
	}
	for id, spec := range kernelTable {
		if spec.name == "" {
			continue // a pair of cache types without that kernel
		}
		m := mods[spec.module]
		if m == nil {
			return fmt.Errorf("ptx: kernel %s: no module %s", spec.name, spec.module)
		}
		f, err := m.Function(spec.name)
		if err != nil {
			return fmt.Errorf("ptx: %w", err)
		}
		k.fns[id] = f
	}
	major, minor, err := k.ctx.Device().ComputeCapability()
	if err != nil {
		return fmt.Errorf("ptx: %w", err)
	}
	k.mode.Native = cudadrv.DeviceInfo{Major: major, Minor: minor}.NativeCode()
	if k.mode.BinaryVersion, err = k.fns[0].Attribute(cudadrv.FuncBinaryVersion); err != nil {
		return fmt.Errorf("ptx: %s: %w", kernelTable[0].name, err)
	}
	if k.mode.PTXVersion, err = k.fns[0].Attribute(cudadrv.FuncPTXVersion); err != nil {
		return fmt.Errorf("ptx: %s: %w", kernelTable[0].name, err)
	}
	return nil
}

func (k *Kernels) unload() {
	for _, m := range k.modules {
		m.Unload()
	}
	k.modules = nil
}

// Mode reports whether native code or JIT-compiled PTX runs.
func (k *Kernels) Mode() LoadMode { return k.mode }

// Close unloads the modules.
func (k *Kernels) Close() error {
	return k.ctx.Do(func() error {
		k.unload()
		return nil
	})
}

// launch checks args against the kernel's spec and launches it. Call inside
// Context.Do.
func (k *Kernels) launch(id kernelID, grid, block cudadrv.Dim3, s cudadrv.Stream, args ...any) error {
	return k.launchShared(id, grid, block, 0, s, args...)
}

// launchShared is launch with sharedMem bytes of dynamic shared memory.
func (k *Kernels) launchShared(id kernelID, grid, block cudadrv.Dim3, sharedMem int, s cudadrv.Stream, args ...any) error {
	spec := kernelTable[id]
	if spec.name == "" {
		return fmt.Errorf("ptx: kernel %d does not exist", id)
	}
	if len(args) != len(spec.params) {
		return fmt.Errorf("ptx: %s takes %d parameters, got %d", spec.name, len(spec.params), len(args))
	}
	for i, a := range args {
		var ok bool
		switch spec.params[i] {
		case 'p':
			_, ok = a.(cudadrv.DevicePtr)
		case 'i':
			_, ok = a.(int32)
		case 'f':
			_, ok = a.(float32)
		}
		if !ok {
			return fmt.Errorf("ptx: %s parameter %d: want %c, got %T", spec.name, i, spec.params[i], a)
		}
	}
	if err := k.fns[id].Launch(grid, block, sharedMem, s, args...); err != nil {
		return fmt.Errorf("ptx: %s: %w", spec.name, err)
	}
	return nil
}
