package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/m40llm/m40llm/cublas"
	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/ptx"
	"github.com/urfave/cli/v2"
)

// gpuOptions are the GPU settings m40llm takes from the environment.
type gpuOptions struct {
	driver        cudadrv.Options
	blas          cublas.Options
	disableCUBLAS bool
}

func gpuOptionsFromEnv() gpuOptions {
	o := gpuOptions{
		driver:        cudadrv.Options{LibraryPath: os.Getenv("M40LLM_LIBCUDA")},
		blas:          cublas.Options{Path: os.Getenv("M40LLM_LIBCUBLAS")},
		disableCUBLAS: os.Getenv("M40LLM_DISABLE_CUBLAS") == "1",
	}
	// Users of the original project install cuBLAS with conda.
	if p := os.Getenv("CONDA_PREFIX"); p != "" {
		o.blas.Dirs = append(o.blas.Dirs, filepath.Join(p, "lib"))
	}
	return o
}

func devicesCommand() *cli.Command {
	return &cli.Command{
		Name:  "devices",
		Usage: "list CUDA GPUs, the driver, cuBLAS and how kernels load; or say why no GPU is used",
		Description: "Environment: M40LLM_LIBCUDA=/path/libcuda.so.1 and M40LLM_LIBCUBLAS=/path/libcublas.so.12 " +
			"override the library search; M40LLM_DISABLE_CUBLAS=1 uses the built-in GEMM kernels.",
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usageErrorf("devices takes no arguments")
			}
			return writeDevices(c.App.Writer, gpuOptionsFromEnv())
		},
	}
}

// writeDevices prints the GPU report. A machine without a usable GPU is not
// an error: the report says why, and the command exits 0.
func writeDevices(w io.Writer, o gpuOptions) error {
	sys, err := discover(o.driver)
	if err != nil {
		fmt.Fprintf(w, "CUDA: not available: %s\n", noGPUReason(sys, err))
		for _, l := range searchDetails(err) {
			fmt.Fprintf(w, "  %s\n", l)
		}
		fmt.Fprintln(w, "GPU inference is disabled; m40llm runs on the CPU.")
		return nil
	}
	fmt.Fprintf(w, "CUDA driver: %s (CUDA %s)\n", sys.LibraryPath, cudadrv.FormatVersion(sys.DriverVersion))
	fmt.Fprintf(w, "Kernels:     embedded sm_52 code + compute_52 PTX, %s\n", ptx.NVCCVersion)

	// cuBLAS must support every device; the oldest decides.
	oldest := sys.Devices[0]
	for _, d := range sys.Devices[1:] {
		if 10*d.Major+d.Minor < 10*oldest.Major+oldest.Minor {
			oldest = d
		}
	}
	switch {
	case o.disableCUBLAS:
		fmt.Fprintln(w, "cuBLAS:      disabled by M40LLM_DISABLE_CUBLAS=1; the built-in GEMM kernels are used")
	default:
		bo := o.blas
		bo.ComputeMajor, bo.ComputeMinor = oldest.Major, oldest.Minor
		lib, err := cublas.Load(bo)
		if err != nil {
			fmt.Fprintf(w, "cuBLAS:      not available; the built-in GEMM kernels are used: %v\n", err)
		} else {
			major, minor, patch := lib.Version()
			fmt.Fprintf(w, "cuBLAS:      %s (%d.%d.%d)\n", lib.Path(), major, minor, patch)
		}
	}

	for _, d := range sys.Devices {
		fmt.Fprintf(w, "\nGPU %d: %s\n", d.Ordinal, d.Name)
		fmt.Fprintf(w, "  compute capability  %d.%d\n", d.Major, d.Minor)
		fmt.Fprintf(w, "  multiprocessors     %d\n", d.SMs)
		fmt.Fprintf(w, "  memory              %.1f GiB total, %.1f GiB free\n",
			float64(d.TotalMem)/(1<<30), float64(d.FreeMem)/(1<<30))
		if bw := d.Bandwidth(); bw > 0 {
			fmt.Fprintf(w, "  bandwidth           %.0f GB/s theoretical (%d MHz, %d-bit)\n", bw/1e9, d.MemClockKHz/1000, d.BusWidthBits)
		} else {
			fmt.Fprintln(w, "  bandwidth           unknown (the driver does not report the memory clock)")
		}
		fmt.Fprintf(w, "  kernels             %s\n", kernelMode(d))
	}
	return nil
}

// kernelMode loads the embedded kernels on d and says how they run.
func kernelMode(d cudadrv.DeviceInfo) string {
	ctx, err := cudadrv.NewContext(d.Device)
	if err != nil {
		return fmt.Sprintf("not loaded: %v", err)
	}
	defer ctx.Close()
	k, err := ptx.Load(ctx)
	if err != nil {
		if errors.Is(err, cudadrv.ErrUnsupportedPTXVersion) {
			return fmt.Sprintf("not loaded: the driver is too old to JIT-compile the PTX (needs CUDA %s): %v",
				cudadrv.FormatVersion(cudadrv.PTXDriverVersion), err)
		}
		return fmt.Sprintf("not loaded: %v", err)
	}
	defer k.Close()
	return k.Mode().String()
}

// discover is cudadrv.Discover; tests replace it to stand for a machine
// whose search fails in other ways than this one's.
var discover = cudadrv.Discover

// noGPUReason turns a Discover error into one precise sentence on one
// line; searchDetails(err) has the paths the library search tried.
func noGPUReason(sys *cudadrv.System, err error) string {
	var (
		le  *cudadrv.LoadError
		old *cudadrv.DriverTooOldError
		se  *cudadrv.SymbolError
	)
	lib := "the driver library"
	if sys != nil && sys.LibraryPath != "" {
		lib = sys.LibraryPath
		if sys.DriverVersion > 0 {
			lib += fmt.Sprintf(" (CUDA %s)", cudadrv.FormatVersion(sys.DriverVersion))
		}
	}
	switch {
	case errors.As(err, &le):
		places := "1 place"
		if len(le.Tried) != 1 {
			places = fmt.Sprintf("%d places", len(le.Tried))
		}
		return fmt.Sprintf("%s not found in %s searched; install the NVIDIA driver, or set M40LLM_LIBCUDA=/path/to/libcuda.so.1",
			le.Library, places)
	case errors.Is(err, cudadrv.ErrStubLibrary):
		return fmt.Sprintf("%s is the CUDA toolkit's stub library, not the driver; install the NVIDIA driver or point M40LLM_LIBCUDA at its libcuda.so.1: %v", lib, err)
	case errors.As(err, &old):
		return fmt.Sprintf("%s: driver too old: %v", lib, err)
	case errors.Is(err, cudadrv.ErrNoDevice):
		return fmt.Sprintf("%s found no CUDA device: %v", lib, err)
	case errors.As(err, &se):
		return fmt.Sprintf("%s lacks an entry point (driver too old or not an NVIDIA driver): %v", lib, err)
	case errors.Is(err, cudadrv.ErrNotSupported):
		return err.Error()
	}
	return fmt.Sprintf("%s: %v", lib, err)
}

// searchDetails returns, one per line, each path the driver library search
// tried and why it failed; nil when err is not a failed search.
func searchDetails(err error) []string {
	var le *cudadrv.LoadError
	if !errors.As(err, &le) {
		return nil
	}
	lines := make([]string, len(le.Tried))
	for i, a := range le.Tried {
		lines[i] = fmt.Sprintf("tried %s: %v", a.Path, a.Err)
	}
	return lines
}
