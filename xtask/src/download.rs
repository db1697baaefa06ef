//! `cargo xtask download-weights`: wires the command line to `backbones::hub::download_many`, then checks that each
//! file builds its backbone with `backbones::pretrained`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use backbones::hub::{download_many, DownloadOptions};
use backbones::registry::{self, ModelSpec};
use backbones::WeightsSource;
use candle_core::Device;

/// Arguments of `download-weights`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Registry names of the models to download (see `models/*.toml`).
    pub names: Vec<String>,
    /// Download every registered model.
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
    /// Hugging Face Hub cache folder (default: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Hub endpoint or mirror (default: HF_ENDPOINT, else https://huggingface.co).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
}

/// Download the requested models concurrently; fail (non-zero exit) if any download fails.
pub fn run(args: &Args) -> Result<()> {
    let specs = select(args)?;
    let mut opts = DownloadOptions::from_env();
    if let Some(dir) = &args.cache_dir {
        opts = opts.with_cache_dir(dir);
    }
    if let Some(endpoint) = &args.endpoint {
        opts = opts.with_endpoint(endpoint.clone());
    }
    opts.progress = std::io::stderr().is_terminal();
    eprintln!(
        "downloading {} model(s) into {} from {}",
        specs.len(),
        opts.cache_dir.display(),
        opts.endpoint
    );
    let results = download_many(&specs, &opts);
    let mut failed = Vec::new();
    for (spec, result) in specs.iter().zip(results) {
        match result {
            // The file must also build its backbone: the same call the CLI and library users make.
            Ok(d) => match backbones::pretrained(&spec.name, &WeightsSource::File(d.path.clone()), &Device::Cpu) {
                Ok(_) if d.was_cached => println!("{}: already cached at {}", spec.name, d.path.display()),
                Ok(_) => println!("{}: downloaded to {}", spec.name, d.path.display()),
                Err(e) => {
                    eprintln!("{}: FAILED: {} does not load: {e}", spec.name, d.path.display());
                    failed.push(spec.name.clone());
                }
            },
            Err(e) => {
                eprintln!("{}: FAILED: {e}", spec.name);
                failed.push(spec.name.clone());
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} download(s) failed: {}",
            failed.len(),
            specs.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

fn select(args: &Args) -> Result<Vec<ModelSpec>> {
    if args.all {
        return Ok(registry::all().to_vec());
    }
    if args.names.is_empty() {
        bail!(
            "name at least one model or pass --all (registered: {})",
            registry::names().join(", ")
        );
    }
    let mut specs: Vec<ModelSpec> = Vec::new();
    for name in &args.names {
        let spec = registry::get(name).with_context(|| format!("download-weights {name}"))?;
        if !specs.iter().any(|s| s.name == spec.name) {
            specs.push(spec);
        }
    }
    Ok(specs)
}
