package control

import (
	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/lb"
)

var _ Datapath = (*fakedp.Datapath)(nil)

// memStore is a Saver that keeps the last saved state and can fail.
type memStore struct {
	saved map[lb.VIPKey]*VIP
	saves int
	err   error
}

func (m *memStore) Save(vips map[lb.VIPKey]*VIP) error {
	if m.err != nil {
		return m.err
	}
	m.saves++
	m.saved = make(map[lb.VIPKey]*VIP, len(vips))
	for k, v := range vips {
		m.saved[k] = v.Clone()
	}
	return nil
}
