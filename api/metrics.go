package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/internal/buildinfo"
)

// metrics are the daemon's Prometheus metrics: datapath counters read
// from the maps at scrape time (so they are never stale and cost nothing
// between scrapes), and the API's own request counts and latencies.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(reg *prometheus.Registry, ctl *control.Controller, build buildinfo.Info) (*metrics, error) {
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lbd_build_info", Help: "Always 1; the labels say which lbd is running.",
		ConstLabels: prometheus.Labels{"version": build.Version, "commit": build.Commit, "build_date": build.Date, "goversion": build.GoVersion},
	})
	buildInfo.Set(1)
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lbd_api_requests_total", Help: "API requests by method, route and status code.",
		}, []string{"method", "route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "lbd_api_request_duration_seconds", Help: "API request latency by method and route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method", "route"}),
	}
	for _, c := range []prometheus.Collector{
		m.requests, m.latency, buildInfo, &datapathCollector{ctl: ctl},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

func (m *metrics) observe(method, route string, status int, d time.Duration) {
	m.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(method, route).Observe(d.Seconds())
}

var (
	descVIPPackets  = prometheus.NewDesc("lbd_vip_packets_total", "Packets forwarded for a VIP.", []string{"vip"}, nil)
	descVIPBytes    = prometheus.NewDesc("lbd_vip_bytes_total", "Bytes (as the client sent them) forwarded for a VIP.", []string{"vip"}, nil)
	descVIPHits     = prometheus.NewDesc("lbd_vip_lru_hits_total", "Packets of a VIP that found their flow in the connection table.", []string{"vip"}, nil)
	descVIPMisses   = prometheus.NewDesc("lbd_vip_lru_misses_total", "Packets of a VIP that chose a real from the ring.", []string{"vip"}, nil)
	descRealPackets = prometheus.NewDesc("lbd_real_packets_total", "Packets sent to a real (all VIPs).", []string{"real"}, nil)
	descRealBytes   = prometheus.NewDesc("lbd_real_bytes_total", "Bytes sent to a real (all VIPs).", []string{"real"}, nil)
	descPairPackets = prometheus.NewDesc("lbd_vip_real_packets_total", "Packets of a VIP sent to one of its reals (removed reals too, until the VIP's counters are reset): they add up to lbd_vip_packets_total.", []string{"vip", "real"}, nil)
	descPairBytes   = prometheus.NewDesc("lbd_vip_real_bytes_total", "Bytes of a VIP sent to one of its reals (as lbd_vip_real_packets_total).", []string{"vip", "real"}, nil)
	descFlowEntries = prometheus.NewDesc("lbd_flow_table_entries", "Entries in the connection table, shared by all CPUs (counted at most every 30 s).", nil, nil)
	descFlowCap     = prometheus.NewDesc("lbd_flow_table_capacity", "Entries the connection table can hold (each CPU's LRU lists an equal share of them).", nil, nil)
	descDatapath    = prometheus.NewDesc("lbd_datapath_packets_total", "Datapath outcomes and events by counter: tx, pass_*, drop_* (drops by reason), lru_*.", []string{"counter"}, nil)
	descDrifts      = prometheus.NewDesc("lbd_reconcile_drifts_total", "Differences between the datapath and the desired state found (and repaired) by reconciles.", nil, nil)
	descRealUp      = prometheus.NewDesc("lbd_real_up", "Health of a real of a VIP that checks its reals: 1 up, 0 down.", []string{"vip", "real"}, nil)
	descFingerprint = prometheus.NewDesc("lbd_config_fingerprint_info", "Always 1; the label is the node's fingerprint (everything that decides where a packet goes): nodes that route alike show the same.", []string{"fingerprint"}, nil)
	descScrapeError = prometheus.NewDesc("lbd_datapath_scrape_errors_total", "Failed reads of the datapath counters during this scrape.", nil, nil)
)

// datapathCollector reads the counters from the maps at scrape time.
type datapathCollector struct {
	ctl *control.Controller
}

func (d *datapathCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, x := range []*prometheus.Desc{descVIPPackets, descVIPBytes, descVIPHits, descVIPMisses, descRealPackets, descRealBytes, descPairPackets, descPairBytes, descFlowEntries, descFlowCap, descDatapath, descDrifts, descRealUp, descFingerprint, descScrapeError} {
		ch <- x
	}
}

func (d *datapathCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descDrifts, prometheus.CounterValue, float64(d.ctl.Drifts()))
	ch <- prometheus.MustNewConstMetric(descFingerprint, prometheus.GaugeValue, 1, d.ctl.Fingerprint())
	all, err := d.ctl.AllStats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descScrapeError, err)
		return
	}
	for name, v := range all.Global.Counters {
		ch <- prometheus.MustNewConstMetric(descDatapath, prometheus.CounterValue, float64(v), name)
	}
	for key, s := range all.VIPs {
		name := control.VIPName(key)
		ch <- prometheus.MustNewConstMetric(descVIPPackets, prometheus.CounterValue, float64(s.Packets), name)
		ch <- prometheus.MustNewConstMetric(descVIPBytes, prometheus.CounterValue, float64(s.Bytes), name)
		ch <- prometheus.MustNewConstMetric(descVIPHits, prometheus.CounterValue, float64(s.LRUHits), name)
		ch <- prometheus.MustNewConstMetric(descVIPMisses, prometheus.CounterValue, float64(s.LRUMisses), name)
		for _, r := range s.Reals {
			ch <- prometheus.MustNewConstMetric(descPairPackets, prometheus.CounterValue, float64(r.Packets), name, r.Addr.String())
			ch <- prometheus.MustNewConstMetric(descPairBytes, prometheus.CounterValue, float64(r.Bytes), name, r.Addr.String())
		}
	}
	if u, err := d.ctl.FlowTableUsage(); err != nil {
		ch <- prometheus.NewInvalidMetric(descScrapeError, err)
	} else {
		ch <- prometheus.MustNewConstMetric(descFlowEntries, prometheus.GaugeValue, float64(u.Entries))
		ch <- prometheus.MustNewConstMetric(descFlowCap, prometheus.GaugeValue, float64(u.Capacity))
	}
	for _, v := range d.ctl.VIPs() {
		for _, r := range v.Reals {
			st, ok := d.ctl.RealHealth(v.Key, r.Addr)
			if !ok {
				continue
			}
			up := 0.0
			if st.State == health.Up {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(descRealUp, prometheus.GaugeValue, up, control.VIPName(v.Key), r.Addr.String())
		}
	}
	for addr, s := range all.Reals {
		ch <- prometheus.MustNewConstMetric(descRealPackets, prometheus.CounterValue, float64(s.Packets), addr.String())
		ch <- prometheus.MustNewConstMetric(descRealBytes, prometheus.CounterValue, float64(s.Bytes), addr.String())
	}
}
