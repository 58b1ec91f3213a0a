//! Compiles every `../shaders/*.comp` to SPIR-V (Vulkan 1.1 target) into `OUT_DIR`, so the
//! renderer embeds the shaders with `include_bytes!` and no shader compiler is needed at run time.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const MISSING: &str =
    "glslangValidator not found: run `cargo xtask setup` (installs Debian's glslang-tools)";

fn main() -> ExitCode {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env("OUT_DIR"));
    let shaders = manifest.join("..").join("shaders");
    // A new shader file shows up as a change of the directory.
    println!("cargo::rerun-if-changed={}", shaders.display());

    let mut sources: Vec<PathBuf> = match std::fs::read_dir(&shaders) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "comp"))
            .collect(),
        Err(e) => {
            eprintln!("cannot read the shader folder {}: {e}", shaders.display());
            return ExitCode::FAILURE;
        }
    };
    sources.sort();

    for source in &sources {
        println!("cargo::rerun-if-changed={}", source.display());
        if let Err(message) = compile(source, &out) {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn compile(source: &Path, out: &Path) -> Result<(), String> {
    let stem = source
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("odd shader file name: {}", source.display()))?;
    let target = out.join(format!("{stem}.spv"));
    let result = Command::new("glslangValidator")
        .args(["-V", "--target-env", "vulkan1.1", "-o"])
        .arg(&target)
        .arg(source)
        .output();
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(MISSING.to_owned()),
        Err(e) => Err(format!("cannot run glslangValidator: {e}")),
        Ok(output) if output.status.success() => Ok(()),
        // glslangValidator reports compile errors on stdout.
        Ok(output) => Err(format!(
            "glslangValidator failed on {}:\n{}{}",
            source.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}
