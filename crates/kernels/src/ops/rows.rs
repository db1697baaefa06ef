//! Loops shared by the row-wise ops (LayerNorm, softmax, GELU): lane-split reductions the compiler vectorises,
//! a vectorisable `exp` for f32, and the row chunking of the parallel passes.

use candle_core::WithDType;

/// Independent accumulators of a reduction: enough to fill two AVX2 registers of f32 and hide the add latency.
pub(crate) const LANES: usize = 16;

/// Elements of one parallel task (64 KiB of f32): whole rows, at least one.
const CHUNK_ELEMS: usize = 16 * 1024;

/// Rows of `d` elements per parallel task.
pub(crate) fn rows_per_chunk(d: usize) -> usize {
    (CHUNK_ELEMS / d.max(1)).max(1)
}

/// Add the lanes of `acc` and the scalar tail `tail` in a fixed order.
#[inline(always)]
fn combine<T: WithDType>(acc: [T; LANES], tail: T) -> T {
    let mut s = tail;
    for v in acc {
        s += v;
    }
    s
}

/// `Σ f(aᵢ)` with [`LANES`] accumulators.
#[inline(always)]
pub(crate) fn sum_map<T: WithDType>(a: &[T], f: impl Fn(T) -> T) -> T {
    let mut acc = [T::zero(); LANES];
    let mut ca = a.chunks_exact(LANES);
    for x in &mut ca {
        let x: &[T; LANES] = x.try_into().expect("LANES elements");
        for j in 0..LANES {
            acc[j] += f(x[j]);
        }
    }
    let tail = ca.remainder().iter().fold(T::zero(), |s, &x| s + f(x));
    combine(acc, tail)
}

/// `Σ f(aᵢ, bᵢ)` with [`LANES`] accumulators (`a` and `b` of the same length).
#[inline(always)]
pub(crate) fn sum_zip<T: WithDType>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::zero(); LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        let x: &[T; LANES] = x.try_into().expect("LANES elements");
        let y: &[T; LANES] = y.try_into().expect("LANES elements");
        for j in 0..LANES {
            acc[j] += f(x[j], y[j]);
        }
    }
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(T::zero(), |s, (&x, &y)| s + f(x, y));
    combine(acc, tail)
}

/// `Σ f(aᵢ, bᵢ, cᵢ)` with [`LANES`] accumulators (all three of the same length).
#[inline(always)]
pub(crate) fn sum_zip3<T: WithDType>(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) -> T {
    let n = a.len().min(b.len()).min(c.len());
    let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
    let mut acc = [T::zero(); LANES];
    let (mut ca, mut cb, mut cc) = (a.chunks_exact(LANES), b.chunks_exact(LANES), c.chunks_exact(LANES));
    for ((x, y), z) in (&mut ca).zip(&mut cb).zip(&mut cc) {
        let x: &[T; LANES] = x.try_into().expect("LANES elements");
        let y: &[T; LANES] = y.try_into().expect("LANES elements");
        let z: &[T; LANES] = z.try_into().expect("LANES elements");
        for j in 0..LANES {
            acc[j] += f(x[j], y[j], z[j]);
        }
    }
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .zip(cc.remainder())
        .fold(T::zero(), |s, ((&x, &y), &z)| s + f(x, y, z));
    combine(acc, tail)
}

/// The maximum of `a` with [`LANES`] accumulators (`-inf` when empty; NaNs are skipped).
#[inline(always)]
pub(crate) fn max<T: WithDType>(a: &[T]) -> T {
    let neg_inf = T::from_f64(f64::NEG_INFINITY);
    let mut acc = [neg_inf; LANES];
    let mut ca = a.chunks_exact(LANES);
    for x in &mut ca {
        let x: &[T; LANES] = x.try_into().expect("LANES elements");
        for j in 0..LANES {
            acc[j] = if x[j] > acc[j] { x[j] } else { acc[j] };
        }
    }
    let mut m = ca.remainder().iter().fold(neg_inf, |m, &x| if x > m { x } else { m });
    for v in acc {
        m = if v > m { v } else { m };
    }
    m
}

/// Below this, `exp` flushes to 0 (e^-87.33 is the smallest normal f32).
const EXP_LO: f32 = -87.336_54;
/// Above this `exp` is clamped (e^88 ≈ 1.65e38); the row ops only take it of values ≤ 0.
const EXP_HI: f32 = 88.0;

/// `eˣ` for f32 in straight-line code the compiler vectorises (Cephes' `expf`: range reduction by ln 2 and a
/// degree-5 polynomial, about 1 ulp); 0 below −87.34, NaN for NaN, clamped at 88.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const SHIFTER: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to an integer held in the low mantissa bits
    let xc = if x < EXP_LO { EXP_LO } else { x };
    let xc = if xc > EXP_HI { EXP_HI } else { xc };
    let t = xc * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_2e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let k = (t.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32);
    let scale = f32::from_bits((k.wrapping_add(127) << 23) as u32);
    if x < EXP_LO {
        0.0
    } else {
        e * scale
    }
}
