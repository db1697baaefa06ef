//! Choosing the compute device from a user string (`cpu`, `cuda`, `cuda:N`, `metal`, `metal:N`, `auto`).
//!
//! [`DeviceSpec`] is the parsed, printable choice (the CLI's `--device` and the `device` of a run's `config.toml`);
//! [`DeviceSpec::open`] turns it into a candle [`Device`].

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::error::{Error, Result};

/// A device choice: what `--device` names, before the device is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// CUDA if available, else Metal if available, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The CUDA GPU with this ordinal (`cuda`, `gpu`: 0).
    Cuda(usize),
    /// The Metal GPU with this ordinal (`metal`, `mps`: 0).
    Metal(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    /// `cpu`, `cuda`, `cuda:N`, `gpu`, `metal`, `metal:N`, `mps` or `auto`, in any case.
    fn from_str(spec: &str) -> Result<Self> {
        let s = spec.trim().to_ascii_lowercase();
        let (kind, index) = match s.split_once(':') {
            Some((k, i)) => {
                let idx = i.parse::<usize>().map_err(|_| {
                    Error::Msg(format!(
                        "invalid device `{spec}`: the index after `:` must be a number, e.g. cuda:0"
                    ))
                })?;
                (k, Some(idx))
            }
            None => (s.as_str(), None),
        };
        match (kind, index) {
            ("cpu", None) => Ok(Self::Cpu),
            ("auto", None) => Ok(Self::Auto),
            ("cuda" | "gpu", i) => Ok(Self::Cuda(i.unwrap_or(0))),
            ("metal" | "mps", i) => Ok(Self::Metal(i.unwrap_or(0))),
            ("cpu" | "auto", Some(_)) => Err(Error::Msg(format!("invalid device `{spec}`: `{kind}` takes no index"))),
            _ => Err(Error::Msg(format!(
                "invalid device `{spec}`: expected cpu, cuda, cuda:N, metal or auto"
            ))),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal(0) => f.write_str("metal"),
            Self::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl DeviceSpec {
    /// Open the device; `Auto` falls back to the CPU when no accelerator is compiled in, present and usable.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto => Ok(auto()),
            Self::Cuda(i) => cuda(i),
            Self::Metal(i) => metal(i),
        }
    }
}

/// The device named by `spec` (see [`DeviceSpec`]), opened.
pub fn parse_device(spec: &str) -> Result<Device> {
    spec.parse::<DeviceSpec>()?.open()
}

/// The best available device: CUDA, then Metal, then CPU.
pub fn auto() -> Device {
    if candle_core::utils::cuda_is_available() {
        if let Ok(d) = cuda(0) {
            return d;
        }
    }
    if candle_core::utils::metal_is_available() {
        if let Ok(d) = metal(0) {
            return d;
        }
    }
    Device::Cpu
}

#[cfg(feature = "cuda")]
fn cuda(index: usize) -> Result<Device> {
    Device::new_cuda(index).map_err(|e| {
        Error::Msg(format!(
            "cannot open CUDA device {index}: {}",
            data::text::one_line(&e.to_string())
        ))
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(_index: usize) -> Result<Device> {
    Err(Error::Msg(
        "built without CUDA support: rebuild with --features cuda".into(),
    ))
}

#[cfg(feature = "metal")]
fn metal(index: usize) -> Result<Device> {
    Device::new_metal(index).map_err(|e| {
        Error::Msg(format!(
            "cannot open Metal device {index}: {}",
            data::text::one_line(&e.to_string())
        ))
    })
}

#[cfg(not(feature = "metal"))]
fn metal(_index: usize) -> Result<Device> {
    Err(Error::Msg(
        "built without Metal support: rebuild with --features metal".into(),
    ))
}

/// The environment variable that sizes candle's own CPU worker pool (the "barrier pool" of its elementwise ops).
pub const CANDLE_POOL_ENV: &str = "CANDLE_NUM_THREADS";

/// Run candle's elementwise CPU ops on the calling thread instead of candle's own worker pool, unless the user set
/// [`CANDLE_POOL_ENV`]; matrix products and graft's kernels keep every rayon thread.
///
/// candle 0.11 splits each large elementwise op between the caller and a pool of its own next to rayon's. Its
/// workers spin for ~25 000 pauses after every op and the caller spins until they finish, so on a machine with as
/// many threads as cores the pool fights rayon's threads for them (`perf`, ConvNeXt-Atto train step on 2 vCPUs
/// sharing the machine with a build: 30 % of samples in the pool's spin loops; `cargo xtask bench` train-all
/// 9.4 → 15.6 img/s, B0 5.1 → 5.8). Call it first thing in `main`, before any thread starts or tensor op runs (the
/// pool is sized once, on candle's first parallel elementwise op). Returns whether it set the variable.
pub fn keep_candle_pool_on_caller() -> bool {
    if std::env::var_os(CANDLE_POOL_ENV).is_some() {
        return false;
    }
    std::env::set_var(CANDLE_POOL_ENV, "1");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_parse() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device(" CPU ").unwrap().is_cpu());
        let auto = parse_device("auto").unwrap();
        if !candle_core::utils::cuda_is_available() && !candle_core::utils::metal_is_available() {
            assert!(auto.is_cpu());
        }
    }

    #[test]
    fn specs_parse_and_print_back() {
        for (text, spec, printed) in [
            ("auto", DeviceSpec::Auto, "auto"),
            ("CPU", DeviceSpec::Cpu, "cpu"),
            ("cuda", DeviceSpec::Cuda(0), "cuda:0"),
            ("gpu", DeviceSpec::Cuda(0), "cuda:0"),
            ("cuda:1", DeviceSpec::Cuda(1), "cuda:1"),
            ("mps", DeviceSpec::Metal(0), "metal"),
            ("metal:2", DeviceSpec::Metal(2), "metal:2"),
        ] {
            let parsed: DeviceSpec = text.parse().unwrap();
            assert_eq!(parsed, spec, "{text}");
            assert_eq!(parsed.to_string(), printed);
            assert_eq!(printed.parse::<DeviceSpec>().unwrap(), spec);
        }
        assert_eq!(DeviceSpec::default(), DeviceSpec::Auto);
    }

    #[test]
    fn bad_specs_are_one_line_errors() {
        for bad in ["gpu:x", "tpu", "cuda:x", "cpu:1", "", "cuda:-1", "tpu:0"] {
            let e = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(e.contains("invalid device"), "{bad}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        assert!("tpu".parse::<DeviceSpec>().unwrap_err().to_string().contains("cuda:N"));
    }

    #[test]
    fn accelerators_without_features_say_how_to_rebuild() {
        if !cfg!(feature = "cuda") {
            let e = parse_device("cuda:1").unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
        if !cfg!(feature = "metal") {
            let e = parse_device("metal").unwrap_err().to_string();
            assert!(e.contains("--features metal"), "{e}");
        }
    }
}
