package cpu

// spinPause tells the core that the caller is polling a flag (four PAUSE
// instructions), which saves power and frees the sibling hyperthread.
//
//go:noescape
func spinPause()
