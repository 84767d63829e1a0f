package tc

// The real-side decapsulation program.
//go:generate go tool bpf2go -tags linux -target bpfel -type decap_config -type decap_counters -type addr_key decap decap.bpf.c -- -I../include -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror

// The LB node's health-check encapsulation program.
//go:generate go tool bpf2go -tags linux -target bpfel -type hc_config -type hc_counters -type real_def hcencap hcencap.bpf.c -- -I../include -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
