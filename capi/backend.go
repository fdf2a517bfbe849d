package main

/*
#include "capi.h"
*/
import "C"

import (
	"errors"
	"fmt"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/m40llm/m40llm/model/cuda"
)

// newBackend returns the backend that params ask for: the CPU, or the
// CUDA backend on params.device with the layers placed by n_gpu_layers
// (model.Place: the last n on the GPU, the rest on the CPU; -1 as many as
// fit), or (M40LLM_BACKEND_AUTO) that when the driver, the device and its
// context all work, else the CPU, as the m40llm command's --backend auto
// does (except that the device is the one the caller names). With AUTO,
// a model of which not even one layer fits runs on the CPU.
func newBackend(path string, p *C.m40llm_model_params_ex, opts model.Options) (model.Backend, error) {
	switch p.base.backend {
	case C.M40LLM_BACKEND_CPU:
		return newCPU(&p.base), nil
	case C.M40LLM_BACKEND_CUDA, C.M40LLM_BACKEND_AUTO:
		if p.n_gpu_layers == 0 {
			return newCPU(&p.base), nil
		}
		g, err := newCUDA(p)
		if err != nil {
			if p.base.backend == C.M40LLM_BACKEND_AUTO {
				return newCPU(&p.base), nil
			}
			return nil, err
		}
		be, err := place(path, p, opts, g)
		var fe *model.FitError
		if errors.As(err, &fe) && p.base.backend == C.M40LLM_BACKEND_AUTO {
			return newCPU(&p.base), nil
		}
		return be, err
	}
	return nil, argErrorf("model params: backend %d is not an m40llm_backend", int32(p.base.backend))
}

// place returns the backend of the layout n_gpu_layers gives on g and the
// CPU; it takes g (closed on failure).
func place(path string, p *C.m40llm_model_params_ex, opts model.Options, g *cuda.Backend) (model.Backend, error) {
	plan, err := model.PlanPath(path, opts)
	if err != nil {
		g.Close()
		return nil, err
	}
	l, err := model.Place(plan, []model.Sizer{g}, nil, int(p.n_gpu_layers))
	if err != nil {
		g.Close()
		return nil, err
	}
	return l.Build(newCPU(&p.base), []model.Backend{g})
}

func newCPU(p *C.m40llm_model_params) model.Backend {
	return cpu.New(cpu.Options{Threads: int(p.n_threads)})
}

func newCUDA(p *C.m40llm_model_params_ex) (*cuda.Backend, error) {
	if err := initDriver(); err != nil {
		return nil, fmt.Errorf("M40LLM_BACKEND_CUDA: no usable CUDA GPU: %w", err)
	}
	n, err := cudadrv.DeviceCount()
	if err != nil {
		return nil, fmt.Errorf("M40LLM_BACKEND_CUDA: %w", err)
	}
	if int(p.base.device) >= n {
		return nil, argErrorf("model params: device %d: there are %d CUDA device(s)", int32(p.base.device), n)
	}
	be, err := cuda.New(cuda.Options{Device: int(p.base.device), MemoryLimit: int64(p.gpu_memory_limit)})
	if err != nil {
		return nil, fmt.Errorf("M40LLM_BACKEND_CUDA: %w", err)
	}
	return be, nil
}
