//! Choosing the compute device from a user string (`cpu`, `cuda`, `cuda:N`, `metal`, `auto`).

use candle_core::Device;

use crate::error::{Error, Result};

/// The device named by `spec`: `cpu`, `cuda`, `cuda:N`, `metal`, `metal:N`, or `auto` (CUDA, then Metal, then CPU).
pub fn parse_device(spec: &str) -> Result<Device> {
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
        ("cpu", None) => Ok(Device::Cpu),
        ("auto", None) => Ok(auto()),
        ("cuda", i) => cuda(i.unwrap_or(0)),
        ("metal", i) => metal(i.unwrap_or(0)),
        ("cpu" | "auto", Some(_)) => Err(Error::Msg(format!("invalid device `{spec}`: `{kind}` takes no index"))),
        _ => Err(Error::Msg(format!(
            "invalid device `{spec}`: expected cpu, cuda, cuda:N, metal or auto"
        ))),
    }
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

/// A short name for a device (`cpu`, `cuda:0`, `metal:0`).
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(feature = "cuda")]
fn cuda(index: usize) -> Result<Device> {
    Device::new_cuda(index).map_err(|e| {
        Error::Msg(format!(
            "cannot open CUDA device {index}: {}",
            crate::weights::one_line(&e.to_string())
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
            crate::weights::one_line(&e.to_string())
        ))
    })
}

#[cfg(not(feature = "metal"))]
fn metal(_index: usize) -> Result<Device> {
    Err(Error::Msg(
        "built without Metal support: rebuild with --features metal".into(),
    ))
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
    fn bad_specs_are_one_line_errors() {
        for bad in ["gpu", "cuda:x", "cpu:1", "", "cuda:-1", "tpu:0"] {
            let e = parse_device(bad).unwrap_err().to_string();
            assert!(e.contains("device") || e.contains("CUDA"), "{bad}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
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
        assert_eq!(device_name(&Device::Cpu), "cpu");
    }
}
