//! placeholder: written by the benchmark work
fn main() {}
