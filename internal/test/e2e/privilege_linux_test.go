package e2e

import (
	"strconv"
	"testing"

	"github.com/pxresp/pxresp/internal/test/procstat"
)

// checkTasks requires every thread of process pid to hold exactly want.
func checkTasks(t *testing.T, pid int, want procstat.Caps) {
	t.Helper()
	tasks, err := procstat.TaskCaps(strconv.Itoa(pid))
	if err != nil {
		t.Fatal(err)
	}
	procstat.CheckTasks(t, tasks, want)
}
