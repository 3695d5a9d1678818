//! The taskman server binary.

fn main() {}
