package logging

import (
	"io"
	"os"
)

// IsTerminal reports whether w is a character device (a terminal): console
// logs and progress bars are drawn only there, so a log file or a pipe
// gets no ANSI escapes or carriage returns.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
