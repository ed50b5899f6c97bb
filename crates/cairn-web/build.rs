//! Rebuilds the crate when the built UI changes: `include_dir!` reads
//! `dist/` at compile time, and cargo does not know that by itself.

fn main() {
    println!("cargo:rerun-if-changed=dist");
}
