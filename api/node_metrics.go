package api

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The capacity of the datapath's tables and the tracer's counters, for
// dashboards and alerts (deploy/grafana, deploy/prometheus).
var (
	descMapEntries  = prometheus.NewDesc("lbd_map_entries", "Entries in use in a datapath table with a fixed capacity: vips, reals (one per real of each VIP).", []string{"map"}, nil)
	descMapCapacity = prometheus.NewDesc("lbd_map_capacity", "Capacity of a datapath table (lbd serve --max-vips, --max-reals, --max-flows): vips, reals, flows.", []string{"map"}, nil)
	descTracerUp    = prometheus.NewDesc("lbd_tracer_running", "1 when the connection tracer runs.", nil, nil)
	descTracerEv    = prometheus.NewDesc("lbd_tracer_events_total", "Events the connection tracer's kernel side output, by type.", []string{"type"}, nil)
	descTracerLost  = prometheus.NewDesc("lbd_tracer_lost_events_total", "Events of the connection tracer lost because its buffer was full, by type (perf: dropped by the perf buffer, type unknown).", []string{"type"}, nil)
)

// nodeCollector reports the tables' use and the tracer's counters.
type nodeCollector struct{ s *Server }

func (n nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMapEntries, descMapCapacity, descTracerUp, descTracerEv, descTracerLost} {
		ch <- d
	}
}

func (n nodeCollector) Collect(ch chan<- prometheus.Metric) {
	vips := n.s.ctl.VIPs()
	// Each (VIP, real) pair has a real index of its own: a real in two
	// VIPs takes two entries of the reals table.
	pairs := 0
	for _, v := range vips {
		pairs += len(v.Reals)
	}
	ch <- prometheus.MustNewConstMetric(descMapEntries, prometheus.GaugeValue, float64(len(vips)), "vips")
	ch <- prometheus.MustNewConstMetric(descMapEntries, prometheus.GaugeValue, float64(pairs), "reals")
	if n.s.opts.Datapath != nil {
		if limits, ok := n.s.opts.Datapath()["limits"].(map[string]uint32); ok {
			for key, name := range map[string]string{"max_vips": "vips", "max_reals": "reals", "max_flows": "flows"} {
				if v, ok := limits[key]; ok {
					ch <- prometheus.MustNewConstMetric(descMapCapacity, prometheus.GaugeValue, float64(v), name)
				}
			}
		}
	}
	if n.s.opts.Tracer == nil {
		ch <- prometheus.MustNewConstMetric(descTracerUp, prometheus.GaugeValue, 0)
		return
	}
	st := n.s.opts.Tracer.Status()
	up := 0.0
	if st.Running {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(descTracerUp, prometheus.GaugeValue, up)
	for t, v := range st.Events {
		ch <- prometheus.MustNewConstMetric(descTracerEv, prometheus.CounterValue, float64(v), t)
	}
	for t, v := range st.Lost {
		ch <- prometheus.MustNewConstMetric(descTracerLost, prometheus.CounterValue, float64(v), t)
	}
	ch <- prometheus.MustNewConstMetric(descTracerLost, prometheus.CounterValue, float64(st.LostPerf), "perf")
}
