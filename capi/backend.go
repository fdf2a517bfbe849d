package main

/*
#include "capi.h"
*/
import "C"

import (
	"fmt"

	"github.com/m40llm/m40llm/cudadrv"
	"github.com/m40llm/m40llm/model"
	"github.com/m40llm/m40llm/model/cpu"
	"github.com/m40llm/m40llm/model/cuda"
)

// newBackend returns the backend that params ask for: the CPU, the CUDA
// backend on params.device, or (M40LLM_BACKEND_AUTO) the CUDA backend when
// the driver, the device and its context all work, else the CPU, as the
// m40llm command's --backend auto does (except that the device is the one
// the caller names).
func newBackend(p *C.m40llm_model_params) (model.Backend, error) {
	switch p.backend {
	case C.M40LLM_BACKEND_CPU:
		return newCPU(p), nil
	case C.M40LLM_BACKEND_CUDA:
		return newCUDA(p)
	case C.M40LLM_BACKEND_AUTO:
		if be, err := newCUDA(p); err == nil {
			return be, nil
		}
		return newCPU(p), nil
	}
	return nil, argErrorf("model params: backend %d is not an m40llm_backend", int32(p.backend))
}

func newCPU(p *C.m40llm_model_params) model.Backend {
	return cpu.New(cpu.Options{Threads: int(p.n_threads)})
}

func newCUDA(p *C.m40llm_model_params) (model.Backend, error) {
	if err := initDriver(); err != nil {
		return nil, fmt.Errorf("M40LLM_BACKEND_CUDA: no usable CUDA GPU: %w", err)
	}
	n, err := cudadrv.DeviceCount()
	if err != nil {
		return nil, fmt.Errorf("M40LLM_BACKEND_CUDA: %w", err)
	}
	if int(p.device) >= n {
		return nil, argErrorf("model params: device %d: there are %d CUDA device(s)", int32(p.device), n)
	}
	be, err := cuda.New(cuda.Options{Device: int(p.device)})
	if err != nil {
		return nil, fmt.Errorf("M40LLM_BACKEND_CUDA: %w", err)
	}
	return be, nil
}
