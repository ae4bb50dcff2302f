// Package readmetest holds the test that runs the commands of the
// repository's README.md against a real node and compares what they print
// with the output the README shows (readme_test.go). It has no API.
package readmetest
