//! The phase-split scratch layout of a padded plane, and the slice loops shared by the NCHW plane kernels.
//!
//! A padded plane (Hp×Wp) is stored as `stride` column phases per row: phase `p` of padded row `r` holds the columns
//! `p, p + s, p + 2s, …`. The input cells a kernel column `kx` meets along an output row are then one contiguous
//! run, so the hot loops are plain slice-to-slice passes the compiler vectorises, for any stride.

use candle_core::{bail, Result, WithDType};

use crate::window::Window;

impl Window {
    /// Elements of the phase-split scratch plane.
    pub(crate) fn scratch_len(&self) -> usize {
        self.hp * self.stride * self.wq
    }

    /// Offset in the scratch of the contiguous run met by kernel cell `(ky, kx)` along output row `oy`.
    #[inline]
    pub(crate) fn run(&self, oy: usize, ky: usize, kx: usize) -> usize {
        let r = oy * self.stride + ky;
        (r * self.stride + kx % self.stride) * self.wq + kx / self.stride
    }

    /// Visit `(plane index, scratch index)` for every input cell, row by row.
    #[inline]
    fn for_each_cell(&self, mut f: impl FnMut(usize, usize)) {
        let s = self.stride;
        for iy in 0..self.h {
            let r = iy + self.pad[0];
            let (mut p, mut j) = (self.pad[2] % s, self.pad[2] / s);
            for ix in 0..self.w {
                f(iy * self.w + ix, (r * s + p) * self.wq + j);
                p += 1;
                if p == s {
                    p = 0;
                    j += 1;
                }
            }
        }
    }

    /// Write `plane` (H×W) into `scratch`, padding cells set to `fill`.
    pub(crate) fn fill<T: WithDType>(&self, plane: &[T], scratch: &mut [T], fill: T) {
        scratch.fill(fill);
        if self.stride == 1 {
            for iy in 0..self.h {
                let at = (iy + self.pad[0]) * self.wq + self.pad[2];
                scratch[at..at + self.w].copy_from_slice(&plane[iy * self.w..(iy + 1) * self.w]);
            }
        } else {
            self.for_each_cell(|i, j| scratch[j] = plane[i]);
        }
    }

    /// Read the input cells of `scratch` back into `plane` (H×W), dropping the padding.
    pub(crate) fn unfill<T: WithDType>(&self, scratch: &[T], plane: &mut [T]) {
        if self.stride == 1 {
            for iy in 0..self.h {
                let at = (iy + self.pad[0]) * self.wq + self.pad[2];
                plane[iy * self.w..(iy + 1) * self.w].copy_from_slice(&scratch[at..at + self.w]);
            }
        } else {
            self.for_each_cell(|i, j| plane[i] = scratch[j]);
        }
    }
}

/// `y += a · x`, element-wise.
#[inline]
pub(crate) fn axpy<T: WithDType>(y: &mut [T], x: &[T], a: T) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `acc += a ⊙ b`, element-wise.
#[inline]
pub(crate) fn mul_add<T: WithDType>(acc: &mut [T], a: &[T], b: &[T]) {
    for ((s, &x), &y) in acc.iter_mut().zip(a).zip(b) {
        *s += x * y;
    }
}

/// Sum of a slice, pairwise over eight lanes.
pub(crate) fn sum<T: WithDType>(v: &[T]) -> T {
    let mut lanes = [T::zero(); 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            lanes[i] += c[i];
        }
    }
    rest.iter()
        .fold(lanes.iter().fold(T::zero(), |a, &b| a + b), |a, &b| a + b)
}

/// The contiguous slice of a CPU tensor's storage, or an error naming `op` if the layout is strided.
pub(crate) fn contiguous<'a, T: WithDType>(op: &str, data: &'a [T], layout: &candle_core::Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}
