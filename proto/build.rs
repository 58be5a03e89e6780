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
    tonic_prost_build::configure()
        // No `Client::connect(addr)` constructors: they clash with the `Connect` RPC, and
        // callers build their channels (timeouts, lazy connect) themselves.
        .build_transport(false)
        .compile_protos(&["proto/raft.proto", "proto/worker.proto"], &["proto"])?;
    Ok(())
}
