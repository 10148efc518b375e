//! Embeds Apache ECharts (installed by `scripts/install-web` into `web/node_modules`) in the
//! binary, so the dashboard needs no network. Without it the build still succeeds: an empty file
//! is embedded and the page shows its numbers as tables, saying that charts were not embedded.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let echarts = manifest.join("web/node_modules/echarts/dist/echarts.min.js");
    let bytes = match std::fs::read(&echarts) {
        Ok(bytes) => {
            println!("cargo:rerun-if-changed={}", echarts.display());
            bytes
        }
        Err(_) => {
            println!(
                "cargo:warning=the dashboard is built without charts: {} is missing; run scripts/install-web, then build again",
                echarts.display()
            );
            // Scanned for any change, so the install is picked up by the next build.
            println!("cargo:rerun-if-changed={}", manifest.join("web").display());
            Vec::new()
        }
    };
    let target = out.join("echarts.min.js");
    // Rewritten only when different, so an unchanged library does not rebuild the crate.
    if std::fs::read(&target).ok().as_deref() != Some(bytes.as_slice()) {
        std::fs::write(&target, &bytes).expect("OUT_DIR is writable");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
