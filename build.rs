//! Build script: pins the libpython minigun was compiled against.
//!
//! pyo3 links to `libpython3.X.so` by name only, so at run time the dynamic loader takes the
//! first one it finds, which on a machine with two Pythons may be a different build than the one
//! whose headers and `sysconfig` we compiled against (and whose site-packages hold the app's
//! packages). An rpath to the interpreter's own `LIBDIR` makes the loader pick that one, and the
//! interpreter's path, baked in as `MINIGUN_PYTHON`, lets `wsgi::interpreter` start CPython with
//! the same `sys.prefix` that `python3` itself would have.

fn main() {
    let config = pyo3_build_config::get();
    if let Some(lib_dir) = config.lib_dir() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
    let python = config.executable().map(str::to_owned).unwrap_or_default();
    println!("cargo:rustc-env=MINIGUN_PYTHON={python}");
    println!(
        "cargo:rustc-env=MINIGUN_PYTHON_VERSION={}.{}",
        config.version().major,
        config.version().minor
    );
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-changed=build.rs");
}
