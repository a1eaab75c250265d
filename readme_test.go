package raftbolt

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestReadmeListsEveryMetric keeps the README's metrics table in step with
// Metrics(), the one list of names.
func TestReadmeListsEveryMetric(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	for _, m := range Metrics() {
		labels := make([]string, len(m.Labels))
		for i, l := range m.Labels {
			labels[i] = "`" + l + "`"
		}
		row := "| `" + m.Name + "` | " + m.Type + " | " + strings.Join(labels, ", ") + " | " + m.Help + " |"
		require.True(t, strings.Contains(string(readme), row), "README.md lacks the row:\n%s", row)
	}
}
