package sensor

// The BPF object and its Go bindings are committed so that `go build` needs
// no clang; `make check-generated` (run by CI) regenerates them and fails when
// they differ. One little-endian object serves amd64 and arm64: the only
// architecture-specific reads, the syscall registers in pt_regs, go through
// CO-RE flavours (pt_regs___x86, pt_regs___arm64) that the loader resolves
// against the running kernel's BTF.
//
// Every type user space shares with the C source is listed with -type, so its
// Go declaration is generated rather than mirrored by hand.
//go:generate go tool bpf2go -tags linux -target bpfel -cc clang -cflags "-O2 -g -Wall -Werror" -type event -type event_header -type event_body -type lpm_key -type event_kind -type syscall_id -type stat_slot sensor bpf/sensor.bpf.c
