//! Nothing to build here. `etcd-client`'s own build script runs protoc; the
//! workspace's `.cargo/config.toml` points PROTOC at `tools/protoc`, which runs
//! the binary shipped in the crates.io `protoc-bin-vendored` package. Naming
//! that package as our build-dependency puts it in every build that includes
//! this crate, so cargo has downloaded it before any build script runs, and
//! `cargo run --bin lssd` works on a machine without protoc.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Fails loudly here, rather than obscurely in etcd-client, on a platform
    // the vendored protoc does not cover and with no protoc installed.
    if protoc_bin_vendored::protoc_bin_path().is_err() && std::env::var_os("PROTOC").is_none() {
        println!(
            "cargo:warning=no vendored protoc for this platform; install protoc and set PROTOC"
        );
    }
}
