//! Compiles the `.proto` files with protox (a pure-Rust protobuf compiler, so no system `protoc` is
//! needed) and generates the Rust types with prost.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let files = [root.join("sealroom/room/v1/room.proto"), root.join("sealroom/flight/v1/flight.proto")];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
