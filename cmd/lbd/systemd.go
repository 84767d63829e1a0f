package main

import (
	"context"
	"log/slog"
	"time"

	sdaemon "github.com/coreos/go-systemd/v22/daemon"
)

// notifyReady tells systemd (Type=notify) that lbd is serving, and keeps
// its watchdog fed (WatchdogSec=) until ctx ends. alive is asked before
// each ping: a daemon whose API loop is stuck stops feeding the watchdog
// and systemd restarts it. Outside systemd (no $NOTIFY_SOCKET) it does
// nothing.
func notifyReady(ctx context.Context, alive func() error, log *slog.Logger) {
	sent, err := sdaemon.SdNotify(false, sdaemon.SdNotifyReady)
	if err != nil {
		log.Warn("sd_notify READY failed", "err", err)
	}
	if !sent {
		return
	}
	every, err := sdaemon.SdWatchdogEnabled(false)
	if err != nil || every <= 0 {
		return
	}
	every /= 2
	log.Info("systemd watchdog enabled", "ping_every", every)
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := alive(); err != nil {
					log.Error("not feeding the systemd watchdog", "err", err)
					continue
				}
				_, _ = sdaemon.SdNotify(false, sdaemon.SdNotifyWatchdog)
			}
		}
	}()
}

// notifyStopping tells systemd that lbd is shutting down.
func notifyStopping() { _, _ = sdaemon.SdNotify(false, sdaemon.SdNotifyStopping) }
