//go:build !race

package compat

// raceEnabled: see race_test.go.
const raceEnabled = false
