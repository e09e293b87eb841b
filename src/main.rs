//! The `meshpilot` command: `serve` and `bootstrap`.

fn main() {}
