//! Small trainable building blocks for dense heads (written with plain candle ops, so every one has a gradient):
//! GroupNorm, resizing (nearest ×2, bilinear to any size, as PyTorch's `F.interpolate`), size matching,
//! channel dropout, seeded initialisation of a [`ParamStore`].

use backbones::ParamStore;
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::error::Result;

/// GroupNorm (Wu & He, 2018) with PyTorch's names `{prefix}.weight` / `{prefix}.bias`, eps 1e-5.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    /// Scale, per channel.
    pub weight: backbones::Param,
    /// Shift, per channel.
    pub bias: backbones::Param,
    /// Number of groups.
    pub groups: usize,
    /// Epsilon added to the variance.
    pub eps: f64,
}

impl GroupNorm {
    /// `groups` groups over `channels` channels (must divide it).
    pub fn new(store: &ParamStore, prefix: &str, groups: usize, channels: usize) -> Result<Self> {
        if groups == 0 || channels % groups != 0 {
            return Err(crate::Error::Config(format!(
                "GroupNorm `{prefix}`: {groups} groups do not divide {channels} channels"
            )));
        }
        Ok(Self {
            weight: store.param_with_role(&format!("{prefix}.weight"), channels, backbones::ParamRole::Norm, true)?,
            bias: store.param_with_role(&format!("{prefix}.bias"), channels, backbones::ParamRole::Norm, false)?,
            groups,
            eps: 1e-5,
        })
    }

    /// Normalise `x` (N×C×H×W) per sample and group, then scale and shift per channel.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let g = x.reshape((n, self.groups, (c / self.groups) * h * w))?;
        let mean = g.mean_keepdim(2)?;
        let centered = g.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(2)?;
        let y = centered
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .reshape((n, c, h, w))?;
        Ok(y.broadcast_mul(&self.weight.tensor().reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.bias.tensor().reshape((1, c, 1, 1))?)?)
    }
}

/// Nearest-neighbour upsampling by 2 (PyTorch's `interpolate(scale_factor=2, mode="nearest")`).
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    Ok(x.reshape((n, c, h, 1, w, 1))?
        .broadcast_as((n, c, h, 2, w, 2))?
        .reshape((n, c, 2 * h, 2 * w))?)
}

/// The `out × inp` matrix of 1-D linear interpolation with PyTorch's coordinate rule (`align_corners`).
fn linear_weights(inp: usize, out: usize, align_corners: bool) -> Vec<f32> {
    let mut m = vec![0f32; out * inp];
    for o in 0..out {
        let src = if align_corners {
            if out > 1 {
                o as f64 * (inp as f64 - 1.0) / (out as f64 - 1.0)
            } else {
                0.0
            }
        } else {
            ((o as f64 + 0.5) * inp as f64 / out as f64 - 0.5).max(0.0)
        };
        let i0 = (src.floor() as usize).min(inp - 1);
        let i1 = (i0 + 1).min(inp - 1);
        let t = (src - i0 as f64) as f32;
        m[o * inp + i0] += 1.0 - t;
        m[o * inp + i1] += t;
    }
    m
}

/// Bilinear resize of N×C×H×W to `out_h × out_w`, as PyTorch's `F.interpolate(mode="bilinear")` (no antialias),
/// computed as two matrix products so that it has a gradient.
pub fn resize_bilinear(x: &Tensor, out_h: usize, out_w: usize, align_corners: bool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if (h, w) == (out_h, out_w) {
        return Ok(x.clone());
    }
    let dev = x.device();
    let wh = Tensor::from_vec(linear_weights(h, out_h, align_corners), (out_h, h), dev)?.to_dtype(x.dtype())?;
    let ww = Tensor::from_vec(linear_weights(w, out_w, align_corners), (out_w, w), dev)?.to_dtype(x.dtype())?;
    // Width: (N·C·H) × W · Wᵀ; height: H' × H · (N·C) × H × W'.
    let y = x
        .reshape((n * c * h, w))?
        .matmul(&ww.t()?)?
        .reshape((n * c, h, out_w))?;
    let y = wh.broadcast_left(n * c)?.contiguous()?.matmul(&y.contiguous()?)?;
    Ok(y.reshape((n, c, out_h, out_w))?)
}

/// `x` cropped or zero-padded at the bottom/right to `h × w` (feature maps of inputs that are not a multiple of
/// the stride differ by a pixel between levels).
pub fn match_size(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, xh, xw) = x.dims4()?;
    let mut y = x.clone();
    if xh > h {
        y = y.narrow(2, 0, h)?;
    } else if xh < h {
        y = y.pad_with_zeros(2, 0, h - xh)?;
    }
    if xw > w {
        y = y.narrow(3, 0, w)?;
    } else if xw < w {
        y = y.pad_with_zeros(3, 0, w - xw)?;
    }
    Ok(y)
}

/// Channel dropout (PyTorch's `Dropout2d`): whole channels zeroed with probability `p`, the rest scaled by
/// 1/(1−p); the mask is drawn from `rng` on the host.
pub fn dropout2d(x: &Tensor, p: f32, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let (n, c, _, _) = x.dims4()?;
    let keep = 1.0 - p;
    let mask: Vec<f32> = (0..n * c)
        .map(|_| if rng.gen::<f32>() < keep { 1.0 / keep } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, (n, c, 1, 1), x.device())?.to_dtype(x.dtype())?;
    Ok(x.broadcast_mul(&mask)?)
}

/// How [`init_store`] initialises one parameter, by its name and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// Kaiming-uniform for ReLU (`bound = √(6 / fan_in)`), as segmentation_models_pytorch's decoders.
    KaimingRelu,
    /// Kaiming-uniform with `a = 1` (`bound = √(3 / fan_in)`), as torchvision's FPN.
    KaimingA1,
    /// Xavier-uniform (`bound = √(6 / (fan_in + fan_out))`), as segmentation_models_pytorch's heads.
    Xavier,
    /// A normal with this standard deviation ×1e-4 (e.g. 100 → 0.01), as FCOS's heads.
    NormalE4(u32),
}

/// Fill every parameter of `store` with rank ≥ 2 from `rng` (`init(name)` chooses the rule), leave 1-d parameters
/// (biases zero, norm scales one) as created, and make every parameter trainable.
pub fn init_store(store: &ParamStore, rng: &mut ChaCha8Rng, init: impl Fn(&str) -> Init) -> Result<()> {
    let mut params = store.params();
    params.sort_by(|a, b| a.name().cmp(b.name()));
    for p in params {
        let t = p.tensor();
        let dims = t.dims().to_vec();
        if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            let fan_out = dims[0] * dims[2..].iter().product::<usize>();
            let n: usize = dims.iter().product();
            let values: Vec<f32> = match init(p.name()) {
                Init::KaimingRelu => {
                    let b = (6.0 / fan_in as f64).sqrt() as f32;
                    (0..n).map(|_| rng.gen_range(-b..b)).collect()
                }
                Init::KaimingA1 => {
                    let b = (3.0 / fan_in as f64).sqrt() as f32;
                    (0..n).map(|_| rng.gen_range(-b..b)).collect()
                }
                Init::Xavier => {
                    let b = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
                    (0..n).map(|_| rng.gen_range(-b..b)).collect()
                }
                Init::NormalE4(s) => {
                    let std = s as f64 * 1e-4;
                    (0..n).map(|_| (normal(rng) * std) as f32).collect()
                }
            };
            p.set(&Tensor::from_vec(values, dims.as_slice(), &Device::Cpu)?.to_dtype(DType::F32)?)?;
        }
        p.set_trainable(true)?;
    }
    Ok(())
}

/// A standard normal draw (Box–Muller).
pub fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.gen::<f64>().max(1e-300);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A square convolution with "same" padding (`k / 2`) from `store` under `name`.
pub fn conv(
    store: &ParamStore,
    name: &str,
    (cin, cout, k, stride): (usize, usize, usize, usize),
    bias: bool,
) -> Result<backbones::layers::Conv2d> {
    Ok(backbones::layers::Conv2d::new(
        store,
        name,
        backbones::layers::ConvConfig {
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            stride,
            padding: backbones::layers::Padding::Symmetric(k / 2),
            groups: 1,
            bias,
        },
    )?)
}

/// The JSON configuration written beside a dense head's weights at `path` (`path.json`).
pub fn config_path(path: &std::path::Path) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".json");
    std::path::PathBuf::from(s)
}

/// Save every tensor of `store` (safetensors at `path`) and `config` (`path.json`), atomically.
pub fn save_store<C: serde::Serialize>(store: &ParamStore, config: &C, path: &std::path::Path) -> Result<()> {
    let tensors: std::collections::HashMap<String, Tensor> = store.state_dict().into_iter().collect();
    crate::save_safetensors_atomic(&tensors, path)?;
    let json = serde_json::to_vec_pretty(config).map_err(|e| crate::Error::Config(e.to_string()))?;
    Ok(data::fsutil::write_atomic(&config_path(path), &json)?)
}

/// Read what [`save_store`] wrote: the configuration (`what` names it in errors) and the tensors.
pub fn load_store<C: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    what: &str,
    device: &Device,
) -> Result<(C, std::collections::HashMap<String, Tensor>)> {
    let cfg_path = config_path(path);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| crate::Error::Io {
        path: cfg_path.clone(),
        reason: e.to_string(),
    })?;
    let config: C = serde_json::from_str(&text).map_err(|e| crate::Error::Io {
        path: cfg_path,
        reason: format!("invalid {what} config: {e}"),
    })?;
    let tensors = candle_core::safetensors::load(path, device).map_err(|e| crate::Error::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok((config, tensors))
}

/// A store over saved `tensors` whose parameters are all made trainable once `build` has created them.
pub fn trainable_store<T>(
    tensors: std::collections::HashMap<String, Tensor>,
    device: &Device,
    build: impl FnOnce(ParamStore) -> Result<T>,
) -> Result<(T, ParamStore)> {
    let store = ParamStore::from_tensors(tensors, DType::F32, device);
    let built = build(store.clone())?;
    for p in store.params() {
        p.set_trainable(true)?;
    }
    Ok((built, store))
}
