package kprobe

// The tracer (x86-64: the kprobe argument macros read x86 registers) and the offset guesser's hook.
//go:generate go tool bpf2go -tags linux -target bpfel -type conn_tuple -type conn_stats -type trace_event -type lbd_trace_event_type -type lbd_trace_counter tracer tracer.bpf.c -- -I../include -I/usr/include/x86_64-linux-gnu -D__TARGET_ARCH_x86 -O2 -g -Wall -Werror
//go:generate go tool bpf2go -tags linux -target bpfel -type guess_status -type lbd_guess_what -type lbd_guess_state guess guess.bpf.c -- -I../include -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
