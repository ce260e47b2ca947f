package sensor

// The BPF object and its Go bindings are committed so that `go build` needs
// no clang; CI regenerates them and fails when they differ. One little-endian
// object serves amd64 and arm64: the programs read no pt_regs, so nothing in
// them is architecture specific.
//go:generate go tool bpf2go -tags linux -target bpfel -cc clang -cflags "-O2 -g -Wall -Werror" sensor bpf/sensor.bpf.c
