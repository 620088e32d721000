//! Gherkin acceptance scenarios (placeholder, replaced in a following commit).
fn main() {}
