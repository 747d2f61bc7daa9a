//! Scaled dot-product attention of one query position over keys and values held in a paged KV
//! cache (f32 or f16 cells), for the attention layers of hybrid models (Jamba).
//!
//! One call handles the `n_q` query heads that share one KV head (grouped-query attention): every
//! key row is loaded once for all of them. Keys `0..n_keys` are read through a block table: key
//! `j` lives in block `j / block_size`, cell `j % block_size`; within a block, cell `c` of this
//! layer and KV head starts `k_off + c * cell_stride` elements from the block's base (values at
//! `v_off`). Causality is the caller's: it passes `n_keys = position + 1`.
//!
//! Arithmetic: f16 cells are widened to f32 exactly; scores `q·k · scale`, the softmax (max
//! subtracted, `exp` as in [`super::ops`]) and the weighted sum of values all accumulate in f32.
//! The paths differ from the scalar reference [`attend_ref`] only by the order of f32 additions;
//! every ISA path (portable, AVX2, AVX-512, NEON, simd128) gives the same bits: the sums go through
//! [`super::ops::canon_sum`], nothing is fused.

use super::ops::{canon_sum, dispatch, exp_ref, exp_v, max_rel_diff, names, Isa, Portable, Vf32};
use crate::quant::half::{f16_to_f32, f32_to_f16};

/// An element type of the KV cache: `f32`, or `u16` holding IEEE half bits.
pub trait KvElem: Copy + 'static {
    /// `V::LANES` elements at `p` as f32.
    ///
    /// # Safety
    /// `p` valid for `V::LANES` elements; the CPU has `V`'s instruction set.
    unsafe fn load<V: Vf32>(p: *const Self) -> V;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

impl KvElem for f32 {
    #[inline(always)]
    unsafe fn load<V: Vf32>(p: *const f32) -> V {
        V::load(p)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> f32 {
        v
    }
}

impl KvElem for u16 {
    #[inline(always)]
    unsafe fn load<V: Vf32>(p: *const u16) -> V {
        V::load_f16(p)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16_to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> u16 {
        f32_to_f16(v)
    }
}

/// One query position, one KV head: see the module docs for the addressing.
pub struct AttnArgs<'a, T> {
    /// `n_q` query heads of `hd` floats each, contiguous.
    pub q: &'a [f32],
    pub n_q: usize,
    pub hd: usize,
    /// Keys `0..n_keys` take part (at least 1).
    pub n_keys: usize,
    /// Base pointer of each block of the sequence, in order (at least `ceil(n_keys / block_size)`).
    pub blocks: &'a [*const T],
    pub block_size: usize,
    pub k_off: usize,
    pub v_off: usize,
    pub cell_stride: usize,
    /// Multiplies every score (1/√hd).
    pub scale: f32,
}

/// Scalar reference: keys and values as contiguous `[n_keys][hd]` f32 rows; `out` is `n_q × hd`.
/// Plain f32 arithmetic in the kernel's order of operations.
#[allow(clippy::too_many_arguments)]
pub fn attend_ref(
    q: &[f32],
    n_q: usize,
    hd: usize,
    keys: &[f32],
    values: &[f32],
    n_keys: usize,
    scale: f32,
    out: &mut [f32],
) {
    let mut s = vec![0f32; n_keys];
    for i in 0..n_q {
        let qi = &q[i * hd..(i + 1) * hd];
        for (j, sj) in s.iter_mut().enumerate() {
            let k = &keys[j * hd..(j + 1) * hd];
            let mut d = 0f32;
            for c in 0..hd {
                d += qi[c] * k[c];
            }
            *sj = d * scale;
        }
        let m = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut sum = 0f32;
        for sj in s.iter_mut() {
            *sj = exp_ref(*sj - m);
            sum += *sj;
        }
        let o = &mut out[i * hd..(i + 1) * hd];
        o.fill(0.0);
        for (j, &p) in s.iter().enumerate() {
            for c in 0..hd {
                o[c] += p * values[j * hd + c];
            }
        }
        let inv = 1.0 / sum;
        for v in o.iter_mut() {
            *v *= inv;
        }
    }
}

/// `Σ q[i]·k[i]` over `n` elements, in the canonical order of [`canon_sum`] (the same bits on
/// every ISA).
#[inline(always)]
unsafe fn dot<V: Vf32, T: KvElem>(q: *const f32, k: *const T, n: usize) -> f32 {
    canon_sum::<V>(n, |i| V::load(q.add(i)).mul(T::load::<V>(k.add(i))), |i| *q.add(i) * (*k.add(i)).to_f32())
}

/// `o[i] += p · v[i]` over `n` elements.
#[inline(always)]
unsafe fn axpy<V: Vf32, T: KvElem>(o: *mut f32, p: f32, v: *const T, n: usize) {
    let vp = V::splat(p);
    let mut i = 0;
    while i + V::LANES <= n {
        T::load::<V>(v.add(i)).fmadd(vp, V::load(o.add(i))).store(o.add(i));
        i += V::LANES;
    }
    while i < n {
        *o.add(i) += p * (*v.add(i)).to_f32();
        i += 1;
    }
}

/// In place `s[j] = exp(s[j] - m)`; returns the sum (in the canonical order of [`canon_sum`]).
#[inline(always)]
unsafe fn exp_sub_sum<V: Vf32>(s: &mut [f32], m: f32) -> f32 {
    let n = s.len();
    let p = s.as_mut_ptr();
    let vm = V::splat(m);
    canon_sum::<V>(
        n,
        |i| {
            let e = exp_v(V::load(p.add(i)).sub(vm));
            e.store(p.add(i));
            e
        },
        |i| {
            let e = exp_v(Portable::load(p.add(i)).sub(Portable::splat(m)));
            e.store(p.add(i));
            *p.add(i)
        },
    )
}

#[inline(always)]
unsafe fn attend_g<V: Vf32, T: KvElem>(a: &AttnArgs<T>, scores: &mut [f32], out: &mut [f32]) {
    let (nq, hd, nk, bs) = (a.n_q, a.hd, a.n_keys, a.block_size);
    assert!(nk >= 1 && a.q.len() >= nq * hd && out.len() >= nq * hd && scores.len() >= nq * nk);
    assert!(a.blocks.len() * bs >= nk);
    let q = a.q.as_ptr();
    for j in 0..nk {
        let kp = a.blocks[j / bs].add(a.k_off + (j % bs) * a.cell_stride);
        for i in 0..nq {
            *scores.get_unchecked_mut(i * nk + j) = dot::<V, T>(q.add(i * hd), kp, hd) * a.scale;
        }
    }
    let mut inv = [0f32; 64];
    let mut inv_heap = Vec::new();
    let inv: &mut [f32] = if nq <= 64 {
        &mut inv[..nq]
    } else {
        inv_heap.resize(nq, 0.0);
        &mut inv_heap
    };
    for i in 0..nq {
        let row = &mut scores[i * nk..(i + 1) * nk];
        let m = row.iter().fold(f32::NEG_INFINITY, |x, &y| x.max(y));
        inv[i] = 1.0 / exp_sub_sum::<V>(row, m);
    }
    out[..nq * hd].fill(0.0);
    let o = out.as_mut_ptr();
    for j in 0..nk {
        let vp = a.blocks[j / bs].add(a.v_off + (j % bs) * a.cell_stride);
        for i in 0..nq {
            axpy::<V, T>(o.add(i * hd), *scores.get_unchecked(i * nk + j), vp, hd);
        }
    }
    for i in 0..nq {
        let r = &mut out[i * hd..(i + 1) * hd];
        for v in r.iter_mut() {
            *v *= inv[i];
        }
    }
}

#[inline(always)]
unsafe fn attend_f32_g<V: Vf32>(a: &AttnArgs<f32>, scores: &mut [f32], out: &mut [f32]) {
    attend_g::<V, f32>(a, scores, out)
}

#[inline(always)]
unsafe fn attend_f16_g<V: Vf32>(a: &AttnArgs<u16>, scores: &mut [f32], out: &mut [f32]) {
    attend_g::<V, u16>(a, scores, out)
}

#[inline(always)]
unsafe fn widen_f16_g<V: Vf32>(src: &[u16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + V::LANES <= n {
        V::load_f16(s.add(i)).store(d.add(i));
        i += V::LANES;
    }
    while i < n {
        Portable::load_f16(s.add(i)).store(d.add(i));
        i += 1;
    }
}

dispatch!(
    /// Attention of one query position over f32 cells: `scores` is scratch of `n_q · n_keys`
    /// floats, `out` receives `n_q × hd`.
    pub unsafe fn attend_f32_with / attend_f32_g(a: &AttnArgs<f32>, scores: &mut [f32], out: &mut [f32])
);
dispatch!(
    /// As [`attend_f32_with`] over f16 cells.
    pub unsafe fn attend_f16_with / attend_f16_g(a: &AttnArgs<u16>, scores: &mut [f32], out: &mut [f32])
);
dispatch!(
    /// f16 bits to f32 (the vector widening the f16 attention path uses).
    pub fn widen_f16_with / widen_f16_g(src: &[u16], dst: &mut [f32])
);

/// Random cells laid out in blocks as the cache lays them out, with the gap and offset of a real
/// layer; returns (block storage, key rows, value rows) with the rows widened to f32.
fn make_blocks<T: KvElem>(
    rng: &mut crate::util::SplitMix64,
    n_keys: usize,
    bs: usize,
    hd: usize,
    stride: usize,
    k_off: usize,
    v_off: usize,
) -> (Vec<Vec<T>>, Vec<f32>, Vec<f32>) {
    let n_blocks = n_keys.div_ceil(bs);
    let block_len = v_off + bs * stride;
    let mut blocks: Vec<Vec<T>> =
        (0..n_blocks).map(|_| (0..block_len).map(|_| T::from_f32(rng.next_f32() * 2.0 - 1.0)).collect()).collect();
    let mut keys = vec![0f32; n_keys * hd];
    let mut vals = vec![0f32; n_keys * hd];
    for j in 0..n_keys {
        let b = &mut blocks[j / bs];
        for c in 0..hd {
            let kv = T::from_f32((rng.next_f32() * 2.0 - 1.0) * 2.0);
            let vv = T::from_f32(rng.next_f32() * 2.0 - 1.0);
            b[k_off + (j % bs) * stride + c] = kv;
            b[v_off + (j % bs) * stride + c] = vv;
            keys[j * hd + c] = kv.to_f32();
            vals[j * hd + c] = vv.to_f32();
        }
    }
    (blocks, keys, vals)
}

/// Selfcheck of the attention paths (f32 and f16 cells) and of the f16 widening against the
/// references.
pub(crate) fn selfcheck(out: &mut Vec<(&'static str, f32)>) {
    let mut rng = crate::util::SplitMix64::new(0xa77e);
    let all: Vec<u16> = (0..=u16::MAX).collect();
    let want: Vec<f32> = all.iter().map(|&h| f16_to_f32(h)).collect();
    for isa in Isa::available() {
        let mut got = vec![0f32; all.len()];
        widen_f16_with(isa, &all, &mut got);
        let bad = got.iter().zip(&want).any(|(a, b)| !(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())));
        out.push((names::F16_WIDEN[isa as usize], if bad { f32::INFINITY } else { 0.0 }));
        let mut worst32 = 0f32;
        let mut worst16 = 0f32;
        for &(n_q, hd, n_keys, bs) in
            &[(1usize, 8usize, 1usize, 4usize), (2, 8, 13, 4), (4, 64, 70, 32), (3, 20, 5, 2), (1, 128, 200, 32)]
        {
            let n_kv = 2;
            let stride = n_kv * hd;
            let k_off = hd + 3;
            let v_off = k_off + bs * stride + 5;
            let q: Vec<f32> = (0..n_q * hd).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
            let scale = 1.0 / (hd as f32).sqrt();
            let mut want = vec![0f32; n_q * hd];
            let mut got = vec![0f32; n_q * hd];
            let mut scores = vec![0f32; n_q * n_keys];
            let (b32, k, v) = make_blocks::<f32>(&mut rng, n_keys, bs, hd, stride, k_off, v_off);
            attend_ref(&q, n_q, hd, &k, &v, n_keys, scale, &mut want);
            let ptrs: Vec<*const f32> = b32.iter().map(|b| b.as_ptr()).collect();
            let a = AttnArgs {
                q: &q,
                n_q,
                hd,
                n_keys,
                blocks: &ptrs,
                block_size: bs,
                k_off,
                v_off,
                cell_stride: stride,
                scale,
            };
            // SAFETY: the blocks hold every addressed cell (make_blocks sizes them).
            unsafe { attend_f32_with(isa, &a, &mut scores, &mut got) };
            worst32 = worst32.max(max_rel_diff(&got, &want));
            let (b16, k, v) = make_blocks::<u16>(&mut rng, n_keys, bs, hd, stride, k_off, v_off);
            attend_ref(&q, n_q, hd, &k, &v, n_keys, scale, &mut want);
            let ptrs: Vec<*const u16> = b16.iter().map(|b| b.as_ptr()).collect();
            let a = AttnArgs {
                q: &q,
                n_q,
                hd,
                n_keys,
                blocks: &ptrs,
                block_size: bs,
                k_off,
                v_off,
                cell_stride: stride,
                scale,
            };
            // SAFETY: as above.
            unsafe { attend_f16_with(isa, &a, &mut scores, &mut got) };
            worst16 = worst16.max(max_rel_diff(&got, &want));
        }
        out.push((names::ATTN_F32[isa as usize], worst32));
        out.push((names::ATTN_F16[isa as usize], worst16));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_isa_matches_the_reference() {
        let mut out = Vec::new();
        selfcheck(&mut out);
        assert!(out.iter().any(|(n, _)| *n == "attention_f16/portable"));
        for (n, d) in out {
            assert!(d < 1e-5, "{n}: {d}");
        }
    }

    /// Every ISA path gives the portable path's bits (f32 and f16 cells, with and without tails).
    #[test]
    fn every_isa_is_bit_identical_to_portable() {
        let mut rng = crate::util::SplitMix64::new(0xb17);
        for &(n_q, hd, n_keys, bs) in
            &[(2usize, 8usize, 13usize, 4usize), (4, 64, 70, 32), (3, 20, 5, 2), (1, 128, 200, 32)]
        {
            let n_kv = 2;
            let stride = n_kv * hd;
            let k_off = hd + 3;
            let v_off = k_off + bs * stride + 5;
            let q: Vec<f32> = (0..n_q * hd).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
            let scale = 1.0 / (hd as f32).sqrt();
            let (b32, _, _) = make_blocks::<f32>(&mut rng, n_keys, bs, hd, stride, k_off, v_off);
            let p32: Vec<*const f32> = b32.iter().map(|b| b.as_ptr()).collect();
            let a32 = AttnArgs {
                q: &q,
                n_q,
                hd,
                n_keys,
                blocks: &p32,
                block_size: bs,
                k_off,
                v_off,
                cell_stride: stride,
                scale,
            };
            let (b16, _, _) = make_blocks::<u16>(&mut rng, n_keys, bs, hd, stride, k_off, v_off);
            let p16: Vec<*const u16> = b16.iter().map(|b| b.as_ptr()).collect();
            let a16 = AttnArgs {
                q: &q,
                n_q,
                hd,
                n_keys,
                blocks: &p16,
                block_size: bs,
                k_off,
                v_off,
                cell_stride: stride,
                scale,
            };
            let run = |isa: Isa| {
                let mut scores = vec![0f32; n_q * n_keys];
                let (mut o32, mut o16) = (vec![0f32; n_q * hd], vec![0f32; n_q * hd]);
                // SAFETY: the blocks hold every addressed cell (make_blocks sizes them).
                unsafe {
                    attend_f32_with(isa, &a32, &mut scores, &mut o32);
                    attend_f16_with(isa, &a16, &mut scores, &mut o16);
                }
                (o32, o16)
            };
            let want = run(Isa::Portable);
            for isa in Isa::available() {
                let got = run(isa);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got.0), bits(&want.0), "{isa:?} f32 cells nq{n_q} hd{hd} keys{n_keys}");
                assert_eq!(bits(&got.1), bits(&want.1), "{isa:?} f16 cells nq{n_q} hd{hd} keys{n_keys}");
            }
        }
    }

    #[test]
    fn reference_is_softmax_weighted_average() {
        // Two keys, one equal to q scaled: check against a hand computation in f64.
        let q = [1.0f32, 0.0];
        let keys = [2.0f32, 0.0, 0.0, 1.0];
        let vals = [1.0f32, 2.0, 3.0, 4.0];
        let mut out = [0f32; 2];
        attend_ref(&q, 1, 2, &keys, &vals, 2, 0.5, &mut out);
        let (s0, s1) = (1.0f64, 0.0f64);
        let (e0, e1) = (s0.exp(), s1.exp());
        let w0 = e0 / (e0 + e1);
        assert!((out[0] as f64 - (w0 * 1.0 + (1.0 - w0) * 3.0)).abs() < 1e-6);
        assert!((out[1] as f64 - (w0 * 2.0 + (1.0 - w0) * 4.0)).abs() < 1e-6);
    }
}
