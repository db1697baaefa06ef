//! Winograd F(4×4, 3×3) for 3×3, stride-1, pad-1 convolutions (Lavin & Gray 2015, "Fast Algorithms for
//! Convolutional Neural Networks"; interpolation points 0, ±1, ±2, ∞ as in NNPACK / ncnn / wincnn): 36 products per
//! 4×4 output tile and input/output channel pair instead of 144.
//!
//! The tiles of all images are flattened (image, tile row, tile column) and processed in blocks of `nt` tiles
//! (several images per block when the map is small), each block in three parallel stages:
//! - input transform `V = Bᵀ d B` of each 6×6 patch (stride 4, zero outside the image), laid out `c × 36 × ntp`
//!   (`ntp` = `nt` rounded up to [`L`]), vectorised over [`L`] tiles, parallel over channels;
//! - 36 single-threaded GEMMs `M[ξ] (co × nt) = U[ξ] (co × c) · V[ξ] (c × nt)`, parallel over ξ, with the weight
//!   transform `U = G g Gᵀ` laid out `co × 36 × c` (recomputed per call);
//! - output transform `Y = Aᵀ M A` per output channel (parallel), vectorised over tiles, cropped at the edges, with
//!   the bias and activation fused, written straight into the NCHW output.
//!
//! The input gradient is the same forward with the flipped, transposed kernel; the weight gradient sums
//! `dU[ξ] = Σ_tiles Z[ξ] · V[ξ]ᵀ` with `Z = A dY Aᵀ` and maps it back with `dW = Gᵀ dU G`.

use rayon::prelude::*;

use super::{gemm_at, Epilogue};
use crate::nhwc::multiversion;

/// Tiles (or channels) per vector group of the transforms.
const L: usize = 16;
/// One value per lane of a vector group.
type Lanes = [f32; L];
/// Bytes of transformed input and output (V and M, or V and Z) that one block of tiles may hold (at least 64
/// tiles), so that the 36 GEMMs find their operands in cache. Measured at batch 16 on ResNet-18's shapes (2 loaded
/// cores, best of 5 interleaved runs): forward 1–4 MiB within 5% of each other, 8 MiB up to 20% slower at 256@14²,
/// 16 MiB 25% slower at 64@56²; the weight gradient fastest at 4 MiB (64@56²: 21 ms against 33 ms at 2 MiB and 23–34
/// ms at 16–64 MiB). One thread per block from start to end, with its own buffers, was no faster at 56²–14² and
/// half as fast at 7² (each thread reads every U[ξ]).
const BLOCK_BYTES: usize = 4 << 20;

/// The geometry of one convolution: batch, input channels, output channels, plane size and tiles per plane.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geom {
    n: usize,
    c: usize,
    co: usize,
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
}

/// One 4×4 output tile: image and output origin, and whether its 6×6 input patch lies inside the image.
#[derive(Debug, Clone, Copy)]
struct Tile {
    b: usize,
    y: usize,
    x: usize,
    interior: bool,
}

impl Geom {
    /// A 3×3/s1/p1 convolution of `n × c × h × w` into `n × co × h × w`.
    pub(crate) fn new(n: usize, c: usize, co: usize, h: usize, w: usize) -> Self {
        Self {
            n,
            c,
            co,
            h,
            w,
            th: h.div_ceil(4),
            tw: w.div_ceil(4),
        }
    }

    /// Tiles over the whole batch.
    fn tiles(&self) -> usize {
        self.n * self.th * self.tw
    }

    /// Tiles `t0 .. t0 + nt` of the flattened (image, tile row, tile column) order.
    fn tile_table(&self, t0: usize, nt: usize) -> Vec<Tile> {
        let per = self.th * self.tw;
        (t0..t0 + nt)
            .map(|t| {
                let (b, r) = (t / per, t % per);
                let (y, x) = (4 * (r / self.tw), 4 * (r % self.tw));
                let interior = y >= 1 && x >= 1 && y + 5 <= self.h && x + 5 <= self.w;
                Tile { b, y, x, interior }
            })
            .collect()
    }

    /// Tiles per block: the transformed buffers of `per_tile` values per tile fit [`BLOCK_BYTES`], at least 64.
    fn block(&self, per_tile: usize) -> usize {
        let nt = (BLOCK_BYTES / (4 * per_tile)).max(64);
        nt.min(self.tiles()).max(1)
    }
}

/// The output pointer shared by the parallel output transforms; each writes its own (image, channel, tile) pixels.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a disjoint set of output elements (distinct channels or tiles), see `output_body`.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// The lane group at `v[at..at + L]`.
#[inline(always)]
fn lanes(v: &[f32], at: usize) -> &Lanes {
    (&v[at..at + L]).try_into().expect("L lanes")
}

/// `Bᵀ z` for the 6 rows `z` of a lane group.
#[inline(always)]
fn bt6(z: [&Lanes; 6]) -> [Lanes; 6] {
    let mut o = [[0f32; L]; 6];
    for l in 0..L {
        let (z0, z1, z2, z3, z4, z5) = (z[0][l], z[1][l], z[2][l], z[3][l], z[4][l], z[5][l]);
        o[0][l] = 4.0 * z0 - 5.0 * z2 + z4;
        o[1][l] = (z3 + z4) - 4.0 * (z1 + z2);
        o[2][l] = (z4 - z3) + 4.0 * (z1 - z2);
        o[3][l] = (z4 - z2) + 2.0 * (z3 - z1);
        o[4][l] = (z4 - z2) - 2.0 * (z3 - z1);
        o[5][l] = 4.0 * z1 - 5.0 * z3 + z5;
    }
    o
}

/// `Aᵀ m` (4 of 6) for a lane group.
#[inline(always)]
fn at6(m: [&Lanes; 6]) -> [Lanes; 4] {
    let mut o = [[0f32; L]; 4];
    for l in 0..L {
        let (m0, m1, m2, m3, m4, m5) = (m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]);
        let (p12, d12, p34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        o[0][l] = m0 + p12 + p34;
        o[1][l] = d12 + 2.0 * d34;
        o[2][l] = p12 + 4.0 * p34;
        o[3][l] = d12 + 8.0 * d34 + m5;
    }
    o
}

/// `G g` (6 of 3) for a lane group.
#[inline(always)]
fn g3(g: [&Lanes; 3]) -> [Lanes; 6] {
    let mut o = [[0f32; L]; 6];
    for l in 0..L {
        let (g0, g1, g2) = (g[0][l], g[1][l], g[2][l]);
        let (a, b) = (g0 + g2, g0 * (1.0 / 24.0) + g2 * (1.0 / 6.0));
        o[0][l] = g0 * 0.25;
        o[1][l] = -(a + g1) * (1.0 / 6.0);
        o[2][l] = -(a - g1) * (1.0 / 6.0);
        o[3][l] = b + g1 * (1.0 / 12.0);
        o[4][l] = b - g1 * (1.0 / 12.0);
        o[5][l] = g2;
    }
    o
}

/// `Gᵀ u` (3 of 6) for a lane group: the adjoint of [`g3`].
#[inline(always)]
fn gt6(u: [&Lanes; 6]) -> [Lanes; 3] {
    let mut o = [[0f32; L]; 3];
    for l in 0..L {
        let (u0, u1, u2, u3, u4, u5) = (u[0][l], u[1][l], u[2][l], u[3][l], u[4][l], u[5][l]);
        let (p12, d12, p34, d34) = (u1 + u2, u1 - u2, u3 + u4, u3 - u4);
        o[0][l] = u0 * 0.25 - p12 * (1.0 / 6.0) + p34 * (1.0 / 24.0);
        o[1][l] = -d12 * (1.0 / 6.0) + d34 * (1.0 / 12.0);
        o[2][l] = (p34 - p12) * (1.0 / 6.0) + u5;
    }
    o
}

/// `A y` (6 of 4) for a lane group: the adjoint of [`at6`].
#[inline(always)]
fn a4(y: [&Lanes; 4]) -> [Lanes; 6] {
    let mut o = [[0f32; L]; 6];
    for l in 0..L {
        let (y0, y1, y2, y3) = (y[0][l], y[1][l], y[2][l], y[3][l]);
        let (e, f, e2, f2) = (y0 + y2, y1 + y3, y0 + 4.0 * y2, 2.0 * y1 + 8.0 * y3);
        o[0][l] = y0;
        o[1][l] = e + f;
        o[2][l] = e - f;
        o[3][l] = e2 + f2;
        o[4][l] = e2 - f2;
        o[5][l] = y3;
    }
    o
}

multiversion! {
    /// `U[co][ξ][c] = (G w[co][c] Gᵀ)[ξ]` for one output channel `co` of `co_all`: `w` is `co_all × c × 9`, or
    /// with `flip` the transposed, rotated kernel of `w` `c × co_all × 9` (the input gradient's); `u` is this
    /// channel's `36 × c`.
    fn weight_body(w: &[f32], c: usize, co_all: usize, co: usize, flip: bool, u: &mut [f32]) => weight_impl
}

#[inline(always)]
fn weight_impl(w: &[f32], c: usize, co_all: usize, co: usize, flip: bool, u: &mut [f32]) {
    for c0 in (0..c).step_by(L) {
        let nl = L.min(c - c0);
        let mut gk = [[0f32; L]; 9];
        for l in 0..nl {
            if flip {
                let taps = &w[((c0 + l) * co_all + co) * 9..][..9];
                for (k, &t) in taps.iter().rev().enumerate() {
                    gk[k][l] = t;
                }
            } else {
                let taps = &w[(co * c + c0 + l) * 9..][..9];
                for (k, &t) in taps.iter().enumerate() {
                    gk[k][l] = t;
                }
            }
        }
        // Columns (G g), then rows ((G g) Gᵀ): `kj[r]` is entry (r, j) of G g.
        let (k0, k1, k2) = (
            g3([&gk[0], &gk[3], &gk[6]]),
            g3([&gk[1], &gk[4], &gk[7]]),
            g3([&gk[2], &gk[5], &gk[8]]),
        );
        for r in 0..6 {
            let o = g3([&k0[r], &k1[r], &k2[r]]);
            for (s, v) in o.iter().enumerate() {
                let dst = &mut u[(r * 6 + s) * c + c0..];
                if nl == L {
                    dst[..L].copy_from_slice(v);
                } else {
                    dst[..nl].copy_from_slice(&v[..nl]);
                }
            }
        }
    }
}

/// The weight transform of `w` (`co × c × 3 × 3`, or with `flip` the input gradient's kernel of `w`
/// `c × co × 3 × 3`) into `u`: `co × 36 × c`, parallel over output channels.
fn transform_weight(w: &[f32], c: usize, co: usize, flip: bool, u: &mut Vec<f32>) {
    u.resize(co * 36 * c, 0.0);
    u.par_chunks_mut(36 * c)
        .enumerate()
        .for_each(|(o, uo)| weight_body(w, c, co, o, flip, uo));
}

/// The transformed buffers of one call (U or dU, V, M or Z), kept per calling thread between calls: the largest
/// (36 × 512 × 512 floats for ResNet's last stage) would otherwise be fresh pages to fault in and zero every call.
/// Every element a call reads it has written in that call (or lies in the discarded lanes past a block's tiles).
#[derive(Default)]
struct Scratch {
    u: Vec<f32>,
    v: Vec<f32>,
    m: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Run `f` with this thread's scratch buffers (fresh ones if a caller up the stack holds them).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut s = SCRATCH.with(|c| {
        c.try_borrow_mut()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    });
    let r = f(&mut s);
    SCRATCH.with(|c| {
        if let Ok(mut held) = c.try_borrow_mut() {
            *held = s;
        }
    });
    r
}

multiversion! {
    /// `V[c][ξ][t]` of channel `c` for the block's `tiles` (`v` is this channel's `36 × ntp`).
    fn input_body(x: &[f32], g: &Geom, c: usize, tiles: &[Tile], ntp: usize, v: &mut [f32]) => input_impl
}

#[inline(always)]
fn input_impl(x: &[f32], g: &Geom, c: usize, tiles: &[Tile], ntp: usize, v: &mut [f32]) {
    let hw = g.h * g.w;
    let mut d = [[0f32; L]; 36];
    for (gi, grp) in tiles.chunks(L).enumerate() {
        // Interior tiles write all 36 values of their lane; zero the group only when some lane is not one.
        if grp.len() < L || grp.iter().any(|t| !t.interior) {
            d = [[0f32; L]; 36];
        }
        for (l, t) in grp.iter().enumerate() {
            let plane = &x[(t.b * g.c + c) * hw..][..hw];
            if t.interior {
                for i in 0..6 {
                    let row = &plane[(t.y + i - 1) * g.w + t.x - 1..][..6];
                    for (j, &val) in row.iter().enumerate() {
                        d[i * 6 + j][l] = val;
                    }
                }
            } else {
                for i in 0..6 {
                    let Some(iy) = (t.y + i).checked_sub(1).filter(|&iy| iy < g.h) else {
                        continue;
                    };
                    let row = &plane[iy * g.w..][..g.w];
                    for j in 0..6 {
                        if let Some(ix) = (t.x + j).checked_sub(1).filter(|&ix| ix < g.w) {
                            d[i * 6 + j][l] = row[ix];
                        }
                    }
                }
            }
        }
        // Columns (Bᵀ d), then rows ((Bᵀ d) B): `cj[r]` is entry (r, j) of Bᵀ d.
        // (Macros, not closures: a closure would be compiled apart, without the target features.)
        macro_rules! col {
            ($j:expr) => {
                bt6([
                    &d[$j],
                    &d[6 + $j],
                    &d[12 + $j],
                    &d[18 + $j],
                    &d[24 + $j],
                    &d[30 + $j],
                ])
            };
        }
        let (c0, c1, c2, c3, c4, c5) = (col!(0), col!(1), col!(2), col!(3), col!(4), col!(5));
        for r in 0..6 {
            let o = bt6([&c0[r], &c1[r], &c2[r], &c3[r], &c4[r], &c5[r]]);
            for (s, val) in o.iter().enumerate() {
                v[(r * 6 + s) * ntp + gi * L..][..L].copy_from_slice(val);
            }
        }
    }
}

multiversion! {
    /// `Y = Aᵀ M A + bias`, activated, for output channel `co` of the block's `tiles`, written into `out`
    /// (`n × co × h × w`); `m` is `36 × co × nt` with at least [`L`] values of slack at the end.
    fn output_body(m: &[f32], g: &Geom, co: usize, tiles: &[Tile], bias: f32, act: Epilogue, out: OutPtr)
        => output_impl
}

#[inline(always)]
fn output_impl(m: &[f32], g: &Geom, co: usize, tiles: &[Tile], bias: f32, act: Epilogue, out: OutPtr) {
    let nt = tiles.len();
    for (gi, grp) in tiles.chunks(L).enumerate() {
        let (base, step) = (co * nt + gi * L, g.co * nt);
        // Columns (Aᵀ M), then rows ((Aᵀ M) A): `cs[a]` is entry (a, s) of Aᵀ M.
        // (Macros, not closures: a closure would be compiled apart, without the target features.)
        macro_rules! col {
            ($s:expr) => {
                at6([
                    lanes(m, base + (0 + $s) * step),
                    lanes(m, base + (6 + $s) * step),
                    lanes(m, base + (12 + $s) * step),
                    lanes(m, base + (18 + $s) * step),
                    lanes(m, base + (24 + $s) * step),
                    lanes(m, base + (30 + $s) * step),
                ])
            };
        }
        let (c0, c1, c2, c3, c4, c5) = (col!(0), col!(1), col!(2), col!(3), col!(4), col!(5));
        macro_rules! row {
            ($a:expr) => {
                at6([&c0[$a], &c1[$a], &c2[$a], &c3[$a], &c4[$a], &c5[$a]])
            };
        }
        let (r0, r1, r2, r3) = (row!(0), row!(1), row!(2), row!(3));
        let mut y: [Lanes; 16] = [
            r0[0], r0[1], r0[2], r0[3], r1[0], r1[1], r1[2], r1[3], r2[0], r2[1], r2[2], r2[3], r3[0], r3[1], r3[2],
            r3[3],
        ];
        for row in y.iter_mut() {
            match act {
                Epilogue::None => row.iter_mut().for_each(|v| *v += bias),
                Epilogue::Relu => row.iter_mut().for_each(|v| *v = (*v + bias).max(0.0)),
                Epilogue::Relu6 => row.iter_mut().for_each(|v| *v = (*v + bias).clamp(0.0, 6.0)),
            }
        }
        for (l, t) in grp.iter().enumerate() {
            let base = ((t.b * g.co + co) * g.h + t.y) * g.w + t.x;
            for a in 0..4.min(g.h - t.y) {
                for b in 0..4.min(g.w - t.x) {
                    // SAFETY: (t.y + a, t.x + b) lies inside plane (t.b, co) of the n × co × h × w output, and only
                    // the task of channel `co` and this tile writes it.
                    unsafe { *out.get().add(base + a * g.w + b) = y[a * 4 + b][l] };
                }
            }
        }
    }
}

multiversion! {
    /// `Z[co][ξ][t] = (A dY Aᵀ)[ξ]` of output channel `co` for the block's `tiles` (`z` is this channel's
    /// `36 × ntp`), from the 4×4 gradient tiles (zero past the edge) of `dy` (`n × co × h × w`).
    fn grad_body(dy: &[f32], g: &Geom, co: usize, tiles: &[Tile], ntp: usize, z: &mut [f32]) => grad_impl
}

#[inline(always)]
fn grad_impl(dy: &[f32], g: &Geom, co: usize, tiles: &[Tile], ntp: usize, z: &mut [f32]) {
    let hw = g.h * g.w;
    let mut d = [[0f32; L]; 16];
    for (gi, grp) in tiles.chunks(L).enumerate() {
        // Tiles inside the plane write all 16 values of their lane; zero the group only when some lane is not one.
        if grp.len() < L || grp.iter().any(|t| t.y + 4 > g.h || t.x + 4 > g.w) {
            d = [[0f32; L]; 16];
        }
        for (l, t) in grp.iter().enumerate() {
            let plane = &dy[(t.b * g.co + co) * hw..][..hw];
            for a in 0..4.min(g.h - t.y) {
                let row = &plane[(t.y + a) * g.w + t.x..];
                for b in 0..4.min(g.w - t.x) {
                    d[a * 4 + b][l] = row[b];
                }
            }
        }
        // Columns (A dY), then rows ((A dY) Aᵀ): `cb[r]` is entry (r, b) of A dY.
        // (Macros, not closures: a closure would be compiled apart, without the target features.)
        macro_rules! col {
            ($b:expr) => {
                a4([&d[$b], &d[4 + $b], &d[8 + $b], &d[12 + $b]])
            };
        }
        let (c0, c1, c2, c3) = (col!(0), col!(1), col!(2), col!(3));
        for r in 0..6 {
            let o = a4([&c0[r], &c1[r], &c2[r], &c3[r]]);
            for (s, val) in o.iter().enumerate() {
                z[(r * 6 + s) * ntp + gi * L..][..L].copy_from_slice(val);
            }
        }
    }
}

multiversion! {
    /// `dW[co][c] = Gᵀ dU[·][co][c] G` for output channel `co`: `du` is `36 × co × c` (with [`L`] values of slack),
    /// `dw` this channel's `c × 9`.
    fn weight_grad_body(du: &[f32], c: usize, co_all: usize, co: usize, dw: &mut [f32]) => weight_grad_impl
}

#[inline(always)]
fn weight_grad_impl(du: &[f32], c: usize, co_all: usize, co: usize, dw: &mut [f32]) {
    for c0 in (0..c).step_by(L) {
        let nl = L.min(c - c0);
        let (base, step) = (co * c + c0, co_all * c);
        // Columns (Gᵀ dU), then rows ((Gᵀ dU) G): `ss[k]` is entry (k, s) of Gᵀ dU.
        // (Macros, not closures: a closure would be compiled apart, without the target features.)
        macro_rules! col {
            ($s:expr) => {
                gt6([
                    lanes(du, base + (0 + $s) * step),
                    lanes(du, base + (6 + $s) * step),
                    lanes(du, base + (12 + $s) * step),
                    lanes(du, base + (18 + $s) * step),
                    lanes(du, base + (24 + $s) * step),
                    lanes(du, base + (30 + $s) * step),
                ])
            };
        }
        let (s0, s1, s2, s3, s4, s5) = (col!(0), col!(1), col!(2), col!(3), col!(4), col!(5));
        for k in 0..3 {
            let o = gt6([&s0[k], &s1[k], &s2[k], &s3[k], &s4[k], &s5[k]]);
            for (j, val) in o.iter().enumerate() {
                for l in 0..nl {
                    dw[(c0 + l) * 9 + k * 3 + j] = val[l];
                }
            }
        }
    }
}

/// `act(conv3x3_s1_p1(x, w) + bias)` for `x` `n × c × h × w` and `w` `co × c × 3 × 3`: `n × co × h × w`.
pub(crate) fn forward(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>, act: Epilogue) -> Vec<f32> {
    forward_blocked(g, x, w, false, bias, act, g.block(36 * (g.c + g.co)))
}

/// [`forward`] in blocks of `block` tiles; with `flip`, `w` is `c × co × 3 × 3` and the kernel its transpose rotated
/// by 180° (the input gradient).
pub(crate) fn forward_blocked(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    flip: bool,
    bias: Option<&[f32]>,
    act: Epilogue,
    block: usize,
) -> Vec<f32> {
    let (c, co) = (g.c, g.co);
    let mut out = vec![0f32; g.n * co * g.h * g.w];
    let ptr = OutPtr(out.as_mut_ptr());
    with_scratch(|Scratch { u, v, m }| {
        transform_weight(w, c, co, flip, u);
        let total = g.tiles();
        for t0 in (0..total).step_by(block) {
            let nt = block.min(total - t0);
            let ntp = nt.next_multiple_of(L);
            let tiles = g.tile_table(t0, nt);
            v.resize(c * 36 * ntp, 0.0);
            v.par_chunks_mut(36 * ntp)
                .enumerate()
                .for_each(|(ci, vc)| input_body(x, g, ci, &tiles, ntp, vc));
            m.resize(36 * co * nt + L, 0.0);
            m[..36 * co * nt]
                .par_chunks_mut(co * nt)
                .enumerate()
                .for_each(|(xi, mx)| {
                    gemm_at(
                        (co, nt, c),
                        mx,
                        nt,
                        false,
                        &u[xi * c..],
                        (36 * c, 1),
                        &v[xi * ntp..],
                        (36 * ntp, 1),
                        1,
                    )
                });
            (0..co).into_par_iter().for_each(|o| {
                let b = bias.map_or(0.0, |b| b[o]);
                output_body(m, g, o, &tiles, b, act, ptr)
            });
        }
    });
    out
}

/// The input gradient `conv3x3_s1_p1(dy, w')` with `w'[ci][co] = w[co][ci]` rotated by 180°: `n × c × h × w`.
pub(crate) fn backward_input(g: &Geom, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let gt = Geom::new(g.n, g.co, g.c, g.h, g.w);
    forward_blocked(&gt, dy, w, true, None, Epilogue::None, gt.block(36 * (g.c + g.co)))
}

/// The weight gradient `Σ_b dy[b] ⋆ x[b]` (`co × c × 3 × 3`) in the Winograd domain.
pub(crate) fn backward_weight(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    backward_weight_blocked(g, x, dy, g.block(36 * (g.c + g.co)))
}

/// [`backward_weight`] in blocks of `block` tiles.
pub(crate) fn backward_weight_blocked(g: &Geom, x: &[f32], dy: &[f32], block: usize) -> Vec<f32> {
    let (c, co) = (g.c, g.co);
    let mut dw = vec![0f32; co * c * 9];
    if g.tiles() == 0 {
        return dw;
    }
    with_scratch(|Scratch { u: du, v, m: z }| {
        du.resize(36 * co * c + L, 0.0);
        let total = g.tiles();
        for (bi, t0) in (0..total).step_by(block).enumerate() {
            let nt = block.min(total - t0);
            let ntp = nt.next_multiple_of(L);
            let tiles = g.tile_table(t0, nt);
            v.resize(c * 36 * ntp, 0.0);
            z.resize(co * 36 * ntp, 0.0);
            v.par_chunks_mut(36 * ntp)
                .enumerate()
                .for_each(|(ci, vc)| input_body(x, g, ci, &tiles, ntp, vc));
            z.par_chunks_mut(36 * ntp)
                .enumerate()
                .for_each(|(o, zo)| grad_body(dy, g, o, &tiles, ntp, zo));
            du[..36 * co * c]
                .par_chunks_mut(co * c)
                .enumerate()
                .for_each(|(xi, dux)| {
                    gemm_at(
                        (co, c, nt),
                        dux,
                        c,
                        bi > 0,
                        &z[xi * ntp..],
                        (36 * ntp, 1),
                        &v[xi * ntp..],
                        (1, 36 * ntp),
                        1,
                    )
                });
        }
        dw.par_chunks_mut(c * 9)
            .enumerate()
            .for_each(|(o, dwo)| weight_grad_body(du, c, co, o, dwo));
    });
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Direct 3×3/s1/p1 convolution in f64, the reference of the unit tests.
    fn direct(g: &Geom, x: &[f32], w: &[f32]) -> Vec<f64> {
        let (h, wd) = (g.h as isize, g.w as isize);
        let mut out = vec![0f64; g.n * g.co * g.h * g.w];
        for b in 0..g.n {
            for o in 0..g.co {
                for y in 0..h {
                    for xx in 0..wd {
                        let mut acc = 0f64;
                        for i in 0..g.c {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (y + ky as isize - 1, xx + kx as isize - 1);
                                    if iy >= 0 && iy < h && ix >= 0 && ix < wd {
                                        let xv = x[((b * g.c + i) * g.h + iy as usize) * g.w + ix as usize];
                                        acc += xv as f64 * w[((o * g.c + i) * 3 + ky) * 3 + kx] as f64;
                                    }
                                }
                            }
                        }
                        out[((b * g.co + o) * g.h + y as usize) * g.w + xx as usize] = acc;
                    }
                }
            }
        }
        out
    }

    /// Every block size (one tile, a partial lane group, several images per block) gives the direct result.
    #[test]
    fn blocks_of_any_size_match_the_direct_convolution() {
        let g = Geom::new(3, 5, 7, 9, 6);
        let (x, w) = (data(3 * 5 * 9 * 6, 1), data(7 * 5 * 9, 2));
        let want = direct(&g, &x, &w);
        for block in [1, 5, 16, 17, 40, 1000] {
            let got = forward_blocked(&g, &x, &w, false, None, Epilogue::None, block);
            let d = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0, f64::max);
            assert!(d < 1e-4, "block {block}: max diff {d}");
        }
    }

    /// The input gradient (the forward with the transposed kernel rotated by 180°, read in place) matches the
    /// direct convolution of `dy` by that kernel, in several block sizes.
    #[test]
    fn input_gradient_matches_the_direct_convolution_with_the_flipped_kernel() {
        let g = Geom::new(2, 4, 6, 7, 10);
        let (dy, w) = (data(2 * 6 * 7 * 10, 5), data(6 * 4 * 9, 6));
        let mut wf = vec![0f32; w.len()];
        for o in 0..6 {
            for i in 0..4 {
                for k in 0..9 {
                    wf[(i * 6 + o) * 9 + k] = w[(o * 4 + i) * 9 + 8 - k];
                }
            }
        }
        let gt = Geom::new(2, 6, 4, 7, 10);
        let want = direct(&gt, &dy, &wf);
        for block in [3, 16, 1000] {
            let got = forward_blocked(&gt, &dy, &w, true, None, Epilogue::None, block);
            let d = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0, f64::max);
            assert!(d < 1e-4, "block {block}: max diff {d}");
        }
        let d = backward_input(&g, &dy, &w)
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(d < 1e-4, "backward_input: max diff {d}");
    }

    /// The weight gradient in any block size equals the adjoint of the direct convolution: <dW, w> = <dy, conv(x, w)>.
    #[test]
    fn weight_gradient_blocks_match_the_adjoint() {
        let g = Geom::new(2, 4, 6, 7, 10);
        let (x, dy) = (data(2 * 4 * 7 * 10, 3), data(2 * 6 * 7 * 10, 4));
        // dW[o][i][k] = Σ dy[o] ⋆ x[i] at tap k: the direct convolution with a one-hot kernel.
        let mut want = vec![0f64; 6 * 4 * 9];
        for (idx, wv) in want.iter_mut().enumerate() {
            let mut w = vec![0f32; 6 * 4 * 9];
            w[idx] = 1.0;
            *wv = direct(&g, &x, &w).iter().zip(&dy).map(|(y, d)| y * *d as f64).sum();
        }
        for block in [1, 16, 23, 1000] {
            let got = backward_weight_blocked(&g, &x, &dy, block);
            let d = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0, f64::max);
            assert!(d < 1e-3, "block {block}: max diff {d}");
        }
        // An empty batch after those calls (whose buffers this thread keeps): no stale gradient.
        let empty = backward_weight(&Geom::new(0, 4, 6, 7, 10), &[], &[]);
        assert_eq!(empty.len(), 6 * 4 * 9);
        assert!(empty.iter().all(|&v| v == 0.0), "no images, no weight gradient");
    }
}
