package xdp

// The balancer, and its benchmark wrappers (built only with -tags lbdbench).
//go:generate go tool bpf2go -tags linux -target bpfel -type vip_key -type vip_meta -type addr_key -type real_def -type flow_key -type flow_state -type lbd_config -type vip_counters -type real_counters -type global_counters -type lbd_vip_flag -type lbd_addr_flag -type lbd_config_flag balancer balancer.bpf.c -- -I../include -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
//go:generate go tool bpf2go -tags linux,lbdbench -target bpfel bench bench.bpf.c -- -I../include -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
