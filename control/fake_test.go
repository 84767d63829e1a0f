package control

import (
	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/internal/fakedp"
)

var _ Datapath = (*fakedp.Datapath)(nil)

// memStore is a Saver that keeps the last saved state and can fail.
type memStore struct {
	saved map[xdp.VIPKey]*VIP
	saves int
	err   error
}

func (m *memStore) Save(vips map[xdp.VIPKey]*VIP) error {
	if m.err != nil {
		return m.err
	}
	m.saves++
	m.saved = make(map[xdp.VIPKey]*VIP, len(vips))
	for k, v := range vips {
		m.saved[k] = v.Clone()
	}
	return nil
}
