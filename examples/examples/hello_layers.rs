//! Placeholder replaced as layers land.
fn main() {}
