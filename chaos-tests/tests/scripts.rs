//! The set-up scripts a new user runs first: `scripts/ensure-deps.sh` must find
//! libclang exactly where clang-sys (RocksDB's bindgen) finds it, so that a
//! machine with only `libclang-cpp.so.14` (the C++ API, shipped without -dev)
//! is told "missing" and gets `libclang-dev` installed, instead of failing the
//! build 45 s later. Runs the script's `--check` against fake file trees
//! (`QRON_DEPS_ROOT`), never against this machine's packages.

use std::path::Path;
use std::process::Command;

fn check(root: &Path) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-deps.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--check")
        .env("QRON_DEPS_ROOT", root)
        .env_remove("LIBCLANG_PATH")
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success(), text)
}

fn tree(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for f in files {
        let p = dir.path().join(f.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&p, b"").expect("touch");
    }
    dir
}

#[test]
fn only_libclang_cpp_is_missing() {
    // What a fresh Debian machine of the project's kind ships: the C++ library
    // (matched by the old `libclang*.so*` check), no libclang.so.
    let t = tree(&[
        "/usr/lib/llvm-14/lib/libclang-cpp.so.14",
        "/usr/lib/x86_64-linux-gnu/libclang-cpp.so.14",
        "/usr/lib/llvm-14/lib/libLLVM-14.so",
    ]);
    assert_eq!(check(t.path()), (false, "libclang: missing".to_owned()));
}

#[test]
fn a_versioned_runtime_library_without_the_dev_symlink_is_missing() {
    // clang-sys (without its `runtime` feature) does not accept libclang.so.1.
    let t = tree(&[
        "/usr/lib/x86_64-linux-gnu/libclang.so.1",
        "/usr/lib/llvm-14/lib/libclang-cpp.so",
    ]);
    assert_eq!(check(t.path()), (false, "libclang: missing".to_owned()));
}

#[test]
fn libclang_dev_files_are_found() {
    for f in [
        "/usr/lib/llvm-14/lib/libclang.so",
        "/usr/lib/llvm-16/lib/libclang-16.so",
        "/usr/lib/x86_64-linux-gnu/libclang-14.so",
        "/usr/local/lib/libclang.so",
    ] {
        let t = tree(&[f, "/usr/lib/llvm-14/lib/libclang-cpp.so.14"]);
        let (ok, text) = check(t.path());
        assert!(ok, "{f}: {text}");
        assert!(text.starts_with("libclang: found ") && text.ends_with(f), "{f}: {text}");
    }
}

#[test]
fn an_empty_machine_is_missing() {
    let t = tree(&[]);
    assert_eq!(check(t.path()), (false, "libclang: missing".to_owned()));
}
