package cudadrv

import (
	"fmt"
	"testing"
)

// NativeCode is the one M40-class predicate: exactly the compute
// capabilities on which sm_52 SASS runs.
func TestNativeCode(t *testing.T) {
	for _, c := range []struct {
		major, minor int
		gpu          string
		want         bool
	}{
		{0, 0, "unknown", false},
		{3, 7, "Tesla K80 (GK210)", false},
		{5, 0, "GTX 750 Ti (GM107, first-generation Maxwell)", false},
		{5, 2, "Tesla M40 (GM200)", true},
		{5, 2, "GTX 970 (GM204)", true},
		{5, 3, "Jetson TX1 (GM20B)", true},
		{6, 0, "Tesla P100 (GP100)", false},
		{6, 1, "Tesla P40 (GP102)", false},
		{6, 2, "Jetson TX2 (GP10B)", false},
		{7, 5, "Tesla T4 (TU104)", false},
		{9, 0, "H100 / H200 (GH100)", false},
		{10, 2, "a future GPU with minor 2", false},
	} {
		t.Run(fmt.Sprintf("%d.%d/%s", c.major, c.minor, c.gpu), func(t *testing.T) {
			d := DeviceInfo{Name: c.gpu, Major: c.major, Minor: c.minor}
			if got := d.NativeCode(); got != c.want {
				t.Errorf("%s, compute %d.%d: NativeCode() = %v, want %v", c.gpu, c.major, c.minor, got, c.want)
			}
		})
	}
}
