//! The README's library quick start is `examples/quickstart.rs`, word for
//! word (without the example's `//!` header), so that the program readers
//! copy is the one CI compiles and runs.
#![allow(clippy::expect_used, missing_docs)]

#[test]
fn the_readme_quick_start_is_the_quickstart_example() {
    let readme = include_str!("../../../README.md");
    let example = include_str!("../examples/quickstart.rs");
    let section = readme
        .split("## Use it as a library")
        .nth(1)
        .expect("README.md has a \"Use it as a library\" section");
    let block = section
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the section has a ```rust block");
    let body: Vec<&str> = example.lines().skip_while(|l| l.starts_with("//!")).collect();
    let body = body.join("\n");
    assert_eq!(
        block.trim(),
        body.trim(),
        "README.md's quick start differs from crates/node/examples/quickstart.rs: update one from the other"
    );
}
