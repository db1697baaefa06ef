//! The geometry of a 2-D window sliding over an `h × w` plane: square kernel, stride, dilation, zero padding per
//! side and the (floor) output size. Every kernel of this crate takes its geometry from a [`Window`].

use crate::error::{Error, Result};

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// The same number of zeros on every side (PyTorch's `padding=p`).
    Symmetric(usize),
    /// TensorFlow's "SAME": output = ceil(input / stride), extra padding at the bottom/right.
    TfSame,
}

impl Padding {
    /// Padding `[top, bottom, left, right]` for an input of `h × w`.
    pub fn amounts(&self, h: usize, w: usize, k: usize, stride: usize, dilation: usize) -> [usize; 4] {
        match *self {
            Padding::Symmetric(p) => [p, p, p, p],
            Padding::TfSame => {
                let same = |n: usize| {
                    let out = n.div_ceil(stride);
                    let need = ((out - 1) * stride + (k - 1) * dilation + 1).saturating_sub(n);
                    (need / 2, need - need / 2)
                };
                let (t, b) = same(h);
                let (l, r) = same(w);
                [t, b, l, r]
            }
        }
    }
}

/// A `k × k` window with a stride, a dilation and zero padding `[top, bottom, left, right]` over an `h × w` plane,
/// with its output size `ho × wo` (floor, as PyTorch). The kernels of this crate build undilated windows
/// ([`Window::new`]); [`Window::dilated`] gives the sizes of dilated ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) dilation: usize,
    pub(crate) pad: [usize; 4],
    pub(crate) ho: usize,
    pub(crate) wo: usize,
    /// Padded rows (`h + top + bottom`).
    pub(crate) hp: usize,
    /// Length of one column phase of a padded row: `ceil((w + left + right) / stride)` (see `ops::plane`).
    pub(crate) wq: usize,
}

impl Window {
    /// An undilated window; `op` names the operation in the error when the window does not fit.
    pub fn new(op: &'static str, h: usize, w: usize, k: usize, stride: usize, pad: [usize; 4]) -> Result<Self> {
        Self::dilated(op, h, w, k, stride, 1, pad)
    }

    /// A window whose kernel taps are `dilation` cells apart.
    pub fn dilated(
        op: &'static str,
        h: usize,
        w: usize,
        k: usize,
        stride: usize,
        dilation: usize,
        pad: [usize; 4],
    ) -> Result<Self> {
        let err = |reason: String| Err(Error::Window { op, reason });
        if stride == 0 || k == 0 || dilation == 0 {
            return err(format!(
                "kernel ({k}), stride ({stride}) and dilation ({dilation}) must be at least 1"
            ));
        }
        let (hp, wp) = (h + pad[0] + pad[1], w + pad[2] + pad[3]);
        let extent = (k - 1) * dilation + 1;
        if hp < extent || wp < extent {
            return err(format!("padded input {hp}×{wp} is smaller than the {k}×{k} kernel"));
        }
        Ok(Self {
            h,
            w,
            k,
            stride,
            dilation,
            pad,
            ho: (hp - extent) / stride + 1,
            wo: (wp - extent) / stride + 1,
            hp,
            wq: wp.div_ceil(stride),
        })
    }

    /// An undilated window padded by `padding`'s rule for this input size.
    pub fn padded(op: &'static str, h: usize, w: usize, k: usize, stride: usize, padding: Padding) -> Result<Self> {
        Self::new(op, h, w, k, stride, padding.amounts(h, w, k, stride, 1))
    }

    /// Input height.
    pub fn h(&self) -> usize {
        self.h
    }

    /// Input width.
    pub fn w(&self) -> usize {
        self.w
    }

    /// Kernel size (square).
    pub fn kernel(&self) -> usize {
        self.k
    }

    /// Stride.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Dilation (1: adjacent taps).
    pub fn dilation(&self) -> usize {
        self.dilation
    }

    /// Zero padding `[top, bottom, left, right]`.
    pub fn pad(&self) -> [usize; 4] {
        self.pad
    }

    /// Output height.
    pub fn ho(&self) -> usize {
        self.ho
    }

    /// Output width.
    pub fn wo(&self) -> usize {
        self.wo
    }

    /// Cells of an input plane.
    pub fn in_len(&self) -> usize {
        self.h * self.w
    }

    /// Cells of an output plane.
    pub fn out_len(&self) -> usize {
        self.ho * self.wo
    }

    /// Whether the window is the identity map of a pointwise convolution (1×1, stride 1, no padding).
    pub fn is_identity(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == [0; 4]
    }

    /// Kernel offsets `lo..hi` along one axis whose input index `o·stride + t − pad` lies in `0..n`.
    #[inline(always)]
    fn taps(&self, o: usize, pad: usize, n: usize) -> (usize, usize) {
        let start = (o * self.stride) as isize - pad as isize;
        let lo = (-start).clamp(0, self.k as isize) as usize;
        let hi = (n as isize - start).clamp(0, self.k as isize) as usize;
        (lo, hi.max(lo))
    }

    /// Kernel rows `lo..hi` that output row `oy` meets inside the input.
    #[inline(always)]
    pub(crate) fn row_taps(&self, oy: usize) -> (usize, usize) {
        self.taps(oy, self.pad[0], self.h)
    }

    /// Kernel columns `lo..hi` that output column `ox` meets inside the input.
    #[inline(always)]
    pub(crate) fn col_taps(&self, ox: usize) -> (usize, usize) {
        self.taps(ox, self.pad[2], self.w)
    }

    /// For kernel column `kx`: the range of output columns whose input column lies inside the plane.
    pub(crate) fn valid_cols(&self, kx: usize) -> (usize, usize) {
        let s = self.stride as isize;
        let off = kx as isize - self.pad[2] as isize;
        // ix = ox·s + off must satisfy 0 <= ix < w.
        let lo = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
        let hi = if (self.w as isize) - off <= 0 {
            0
        } else {
            ((self.w as isize - off + s - 1) / s).min(self.wo as isize)
        };
        (lo as usize, hi.max(lo) as usize)
    }
}
