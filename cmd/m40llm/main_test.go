package main

import (
	"os"
	"testing"
)

// execMainEnv, set to 1 in the environment of this package's test binary,
// makes it run m40llm with its arguments instead of the tests, so that
// tests that need a process of their own (on a pseudo-terminal) start the
// binary they run in rather than build one.
const execMainEnv = "M40LLM_TEST_EXEC_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(execMainEnv) == "1" {
		os.Exit(run(os.Args, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}
