//! Compiles the `.proto` contracts with tonic/prost.
//!
//! protoc comes from the `protoc-bin-vendored` crate unless `PROTOC` is set, so a
//! fresh machine builds without installing anything by hand.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        std::env::set_var("PROTOC", protoc);
    }
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure().compile_protos(&["proto/raft.proto"], &["proto"])?;
    Ok(())
}
