//! Throughput benchmarks reported by `graft bench`.
