//! Compiles `oxroot/v1/*.proto` without a system `protoc`: protox parses the
//! files into a `FileDescriptorSet`, tonic-prost-build generates the Rust
//! code from it, and the encoded set is kept for server reflection.

use std::env;
use std::error::Error;
use std::fs;
use std::path::PathBuf;

use prost::Message as _;

/// The contract's files, relative to the crate root (the include path).
const PROTOS: &[&str] = &[
    "oxroot/v1/common.proto",
    "oxroot/v1/device.proto",
    "oxroot/v1/operator.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR unset")?);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR unset")?);

    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }

    // Imports (google/protobuf/*.proto) are included so that reflection
    // clients can resolve every dependency; source info keeps the comments,
    // which become rustdoc here and documentation in reflection tools.
    let fds = protox::Compiler::new([&root])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?
        .file_descriptor_set();
    fs::write(
        out_dir.join("oxroot_v1_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    // prost-build needs the imported well-known types to analyse the message
    // graph; it maps them to prost-types rather than generating them.
    // Type names (`prost::Name`) let a client find a message's descriptor in
    // FILE_DESCRIPTOR_SET by its full name, as enrollctl's proto3 JSON output does.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        // Undecodable requests are INVALID_ARGUMENT (src/codec.rs).
        .codec_path("crate::codec::ContractCodec")
        .emit_rerun_if_changed(false)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
