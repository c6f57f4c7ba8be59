//! Test-and-bench package; see tests/ and benches/.
