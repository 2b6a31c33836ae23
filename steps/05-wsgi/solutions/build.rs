//! Build script: remember which Python this step was compiled against.
//!
//! pyo3 links `libpython3.X.so` by name, so on a machine with two Pythons the loader could pick
//! another build than the one whose headers we used. The rpath makes it pick the build's own
//! library, and `STEP_PYTHON` lets `sys::init_python` start CPython as that interpreter.

fn main() {
    let config = pyo3_build_config::get();
    if let Some(lib_dir) = config.lib_dir() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
    let python = config.executable().unwrap_or_default();
    println!("cargo:rustc-env=STEP_PYTHON={python}");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-changed=build.rs");
}
