package response

// The BPF object and its Go bindings are committed, like the sensor's (see
// sensor/gen.go); `make check-generated` regenerates both.
//go:generate go tool bpf2go -tags linux -target bpfel -cc clang -cflags "-O2 -g -Wall -Werror" -type exec_key -type name_key -type file_ctime -type hash_verdict -type exec_action -type exec_hit -type drift_all_action execdeny bpf/execdeny.bpf.c
//go:generate go tool bpf2go -tags linux -target bpfel -cc clang -cflags "-O2 -g -Wall -Werror" -type allow4_key -type allow6_key netblock bpf/netblock.bpf.c
