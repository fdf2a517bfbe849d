//go:build !amd64

package cpu

// spinPause does nothing off amd64: polling loops just spin.
func spinPause() {}
