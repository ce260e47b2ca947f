package benchutil

import (
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestCountsFlag(t *testing.T) {
	names := []string{"exec", "connect"}
	tests := []struct{ in, wantErr, want string }{
		{in: "exec=5", want: "exec=5,connect=1"},
		{in: "exec=5, connect=7", want: "exec=5,connect=7"},
		{in: "exec", wantErr: "want storm=N"},
		{in: "open=3", wantErr: "unknown storm"},
		{in: "exec=0", wantErr: "positive integer"},
	}
	for _, tc := range tests {
		n := map[string]int{"exec": 1, "connect": 1}
		err := CountsFlag(n, names, "storm")(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || FormatCounts(n, names) != tc.want {
			t.Errorf("%q: %v %s, want %s", tc.in, err, FormatCounts(n, names), tc.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, tc := range []struct{ p, want float64 }{{50, 5}, {99, 10}, {10, 1}, {0, 1}, {100, 10}} {
		if got := Percentile(xs, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if xs[0] != 5 {
		t.Error("xs reordered")
	}
	if Percentile(nil, 50) != 0 {
		t.Error("empty")
	}
}
