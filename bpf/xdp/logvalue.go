package xdp

import "log/slog"

// LogValue logs a mode by name ("native"), in JSON logs too, where slog
// would otherwise write the integer.
func (m AttachMode) LogValue() slog.Value { return slog.StringValue(m.String()) }
