// Package deptest fails the build when the shipped daemon depends on what
// only tests it: the packages under internal/test, the benchmark, and the
// modules that only tests and the benchmark use (k8s.io, gonum).
package deptest
