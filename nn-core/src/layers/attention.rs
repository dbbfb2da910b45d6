//! Multi-head self-attention over sequences `[T, D]`, and the scaled dot-product attention it
//! is made of.
//!
//! A batch of sequences is stored `[batch, T, D]`. The input projection writes `Q | K | V` of
//! every time step side by side, `[batch, T, 3D]`; head `h` of `Q` is then the columns
//! `h·dh..(h+1)·dh` of a sample's `[T, 3D]` block (row stride `3D`), a strided view that the
//! matrix products read in place.
//!
//! `Kᵀ` and `Vᵀ` are transposed views of the same columns: the packed product transposes them
//! eight by eight as it packs its panels. (A row-major copy of `Kᵀ` and `Vᵀ` per sample, which
//! an earlier version made for the products, ran no faster and cost 1% of W7's training step.)

use thiserror::Error;

use crate::init::{fan_in_uniform, uniform, Rng};
use crate::kernels::parallel::meet;
use crate::kernels::vector::{self, dot, sum};
use crate::kernels::{matmul, matmul_triangular, MatMut, MatRef, Triangle};
use crate::layers::linear::{add_row_sums, linear_rows, linear_rows_backward};
use crate::layers::sequence::check_batch;
use crate::module::{join_name, Module, Param, ParamMut};
use crate::{Float, Rank2, Tensor};
use std::marker::PhantomData;
use std::ops::Range;

/// Which keys each query of one sequence may attend to: keys `0..length` (a key-padding mask
/// hides the keys at `length..`), and with `causal` only keys `j <= i` for query `i`. Either
/// way query `i` sees a prefix of the keys, `0..visible(i)`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AttentionMask {
    pub causal: bool,
    pub length: usize,
}

impl AttentionMask {
    /// `triangle` under a causal mask, `Triangle::Full` without: the work that a product of
    /// attention may skip. A causal mask makes `P` and `dS` lower triangular, and hides the
    /// scores above the diagonal.
    fn triangle(&self, triangle: Triangle) -> Triangle {
        if self.causal {
            triangle
        } else {
            Triangle::Full
        }
    }

    /// The number of keys query `query` sees (the prefix `0..visible`), out of `keys`.
    #[inline]
    pub fn visible(&self, query: usize, keys: usize) -> usize {
        let n = self.length.min(keys);
        if self.causal {
            n.min(query + 1)
        } else {
            n
        }
    }
}

/// The transpose of a view (free: its strides swap).
fn transpose<E>(m: MatRef<'_, E>) -> MatRef<'_, E> {
    MatRef {
        data: m.data,
        rows: m.cols,
        cols: m.rows,
        row_stride: m.col_stride,
        col_stride: m.row_stride,
    }
}

/// A `rows x cols` view of `data` starting at `offset`, rows `row_stride` apart.
fn view<E>(
    data: &[E],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
) -> MatRef<'_, E> {
    MatRef {
        data: data.get(offset..).unwrap_or(&[]),
        rows,
        cols,
        row_stride,
        col_stride: 1,
    }
}

/// The writable counterpart of [`view`].
fn view_mut<E>(
    data: &mut [E],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
) -> MatMut<'_, E> {
    let data = if offset <= data.len() {
        &mut data[offset..]
    } else {
        &mut []
    };
    MatMut {
        data,
        rows,
        cols,
        row_stride,
        col_stride: 1,
    }
}

/// Sets rows `from..` of `m` to zero.
fn zero_rows_from<E: Float>(m: &mut MatMut<'_, E>, from: usize) {
    for i in from..m.rows {
        for j in 0..m.cols {
            m.data[i * m.row_stride + j * m.col_stride] = E::ZERO;
        }
    }
}

/// Scaled dot-product attention of one sequence (one head of one sample):
///
/// ```text
/// S = Q Kᵀ / √dk + M,   P = softmax(S) (row by row),   O = P V
/// ```
///
/// with `Q` `[Tq, dk]`, `K` `[Tk, dk]`, `V` `[Tk, dv]`, `O` `[Tq, dv]`, and `M[i, j] = −∞`
/// where `mask` hides key `j` from query `i` (0 elsewhere). Writes the probabilities `P`
/// into `probs` (`[Tq, Tk]`, row-major; hidden entries are exactly 0) and `O` into `out`.
/// A query that sees no key at all gets probabilities 0 and output 0 (PyTorch gives NaN).
///
/// Only the keys `0..mask.length` enter the products. The views may be strided (a head inside
/// a `[T, 3D]` projection): nothing is copied.
pub fn scaled_dot_product_attention<E: Float>(
    q: MatRef<'_, E>,
    k: MatRef<'_, E>,
    v: MatRef<'_, E>,
    mask: AttentionMask,
    probs: &mut [E],
    out: MatMut<'_, E>,
) {
    let (tq, tk) = (q.rows, k.rows);
    assert!(
        k.cols == q.cols && v.rows == tk && out.rows == tq && out.cols == v.cols,
        "scaled_dot_product_attention: Q [{tq}x{}], K [{tk}x{}], V [{}x{}], O [{}x{}]",
        q.cols,
        k.cols,
        v.rows,
        v.cols,
        out.rows,
        out.cols
    );
    let probs = &mut probs[..tq * tk];
    let n = mask.length.min(tk);
    let scale = E::from_f64(1.0 / (q.cols as f64).sqrt());
    // S[:, :n] = Q K[:n]ᵀ (unscaled; the scale is applied in the softmax).
    matmul_triangular(
        q,
        transpose(MatRef { rows: n, ..k }),
        view_mut(probs, 0, tq, n, tk),
        false,
        mask.triangle(Triangle::LowerC),
    );
    for (i, row) in probs.chunks_exact_mut(tk.max(1)).enumerate() {
        masked_softmax(row, mask.visible(i, tk), scale);
    }
    // O = P[:, :n] V[:n].
    matmul_triangular(
        view(probs, 0, tq, n, tk),
        MatRef { rows: n, ..v },
        out,
        false,
        mask.triangle(Triangle::LowerA),
    );
}

/// `row[..seen] = softmax(scale · row[..seen])`, stable (the largest score is subtracted
/// first), and `row[seen..] = 0`.
///
/// The hidden scores up to the next multiple of 8 are set to −∞ and go through the same
/// loops, whose exponentials turn them into 0: every row then runs in whole vectors. (The
/// ragged ends of causal rows went one value at a time: a W7 head's forward took 11.9 µs
/// instead of 11.2.)
#[inline]
fn masked_softmax<E: Float>(row: &mut [E], seen: usize, scale: E) {
    if seen == 0 {
        row.fill(E::ZERO);
        return;
    }
    let width = seen.next_multiple_of(8).min(row.len());
    let (active, rest) = row.split_at_mut(width);
    active[seen..].fill(E::from_f64(f64::NEG_INFINITY));
    let max = vector::max(&active[..seen]) * scale;
    for v in active.iter_mut() {
        *v = (*v * scale - max).exp();
    }
    let inv = E::ONE / sum(active);
    for v in active.iter_mut() {
        *v *= inv;
    }
    rest.fill(E::ZERO);
}

/// The backward of [`scaled_dot_product_attention`]: given `dO = dL/dO` and the
/// probabilities `P` of the forward, writes `dQ`, `dK` and `dV`:
///
/// ```text
/// dV = Pᵀ dO
/// dP = dO Vᵀ
/// dS = P ⊙ (dP − rowsum(P ⊙ dP))          (the softmax's backward, row by row)
/// dQ = dS K / √dk,   dK = dSᵀ Q / √dk
/// ```
///
/// Hidden entries have `P = 0`, hence `dS = 0`: no gradient flows through a masked score, and
/// the rows of `dK` and `dV` of keys at `mask.length..` are 0. `d_scores` (`[Tq, Tk]`) is
/// scratch space.
#[allow(clippy::too_many_arguments)]
pub fn scaled_dot_product_attention_backward<E: Float>(
    q: MatRef<'_, E>,
    k: MatRef<'_, E>,
    v: MatRef<'_, E>,
    mask: AttentionMask,
    probs: &[E],
    d_out: MatRef<'_, E>,
    d_scores: &mut [E],
    dq: MatMut<'_, E>,
    mut dk: MatMut<'_, E>,
    mut dv: MatMut<'_, E>,
) {
    let (tq, tk) = (q.rows, k.rows);
    let n = mask.length.min(tk);
    let scale = E::from_f64(1.0 / (q.cols as f64).sqrt());
    let probs = &probs[..tq * tk];
    let d_scores = &mut d_scores[..tq * tk];
    let p = view(probs, 0, tq, n, tk);
    // dV[:n] = P[:, :n]ᵀ dO.
    matmul_triangular(
        transpose(p),
        d_out,
        MatMut {
            data: &mut *dv.data,
            rows: n,
            ..dv
        },
        false,
        mask.triangle(Triangle::UpperA),
    );
    zero_rows_from(&mut dv, n);
    // dP[:, :n] = dO V[:n]ᵀ.
    matmul_triangular(
        d_out,
        transpose(MatRef { rows: n, ..v }),
        view_mut(d_scores, 0, tq, n, tk),
        false,
        mask.triangle(Triangle::LowerC),
    );
    // dS = P ⊙ (dP − rowsum(P ⊙ dP)), with the 1/√dk of the scores folded in.
    for (i, (ds, p)) in d_scores
        .chunks_exact_mut(tk.max(1))
        .zip(probs.chunks_exact(tk.max(1)))
        .enumerate()
    {
        let seen = mask.visible(i, tk);
        let (ds_seen, ds_hidden) = ds.split_at_mut(seen);
        let inner = dot(&p[..seen], ds_seen);
        for (d, p) in ds_seen.iter_mut().zip(&p[..seen]) {
            *d = *p * (*d - inner) * scale;
        }
        // Only the first n columns are read below.
        ds_hidden[..n - seen].fill(E::ZERO);
    }
    let ds = view(d_scores, 0, tq, n, tk);
    // dQ = dS[:, :n] K[:n].
    matmul_triangular(
        ds,
        MatRef { rows: n, ..k },
        dq,
        false,
        mask.triangle(Triangle::LowerA),
    );
    // dK[:n] = dS[:, :n]ᵀ Q.
    matmul_triangular(
        transpose(ds),
        q,
        MatMut {
            data: &mut *dk.data,
            rows: n,
            ..dk
        },
        false,
        mask.triangle(Triangle::UpperA),
    );
    zero_rows_from(&mut dk, n);
}

/// Sequence lengths that `set_lengths` cannot accept.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LengthsError {
    #[error(
        "{given} sequence lengths, but the attention cache holds at most {max_batch} samples (it was made by new_cache({max_batch}))"
    )]
    TooMany { given: usize, max_batch: usize },
    #[error(
        "sample {sample} has length {length}, but a length must be in 1..={steps} (the sequences have {steps} steps, and a query needs at least one key to attend to)"
    )]
    OutOfRange {
        sample: usize,
        length: usize,
        steps: usize,
    },
}

/// What [`MultiHeadAttention`] keeps between its forward and backward, sized for `max_batch`
/// samples, and the per-sample sequence lengths of the key-padding mask.
#[derive(Clone, Debug)]
pub struct AttentionCache<E> {
    max_batch: usize,
    /// `[max_batch]`: the lengths given by `set_lengths`, or `steps` (no padding).
    lengths: Vec<usize>,
    /// How many lengths `set_lengths` gave (the batch of the next forwards), `None` without
    /// padding.
    padded: Option<usize>,
    /// `Q | K | V`, `[max_batch, T, 3D]`.
    qkv: Vec<E>,
    /// Attention probabilities, `[max_batch, HEADS, T, T]`.
    probs: Vec<E>,
    /// The heads' outputs side by side, `[max_batch, T, D]` (the output projection's input).
    heads: Vec<E>,
    /// `dL/d heads`, `[max_batch, T, D]`.
    d_heads: Vec<E>,
    /// `dL/dQ`, `dL/dK`, `dL/dV`, each `[max_batch, T, D]`.
    dq: Vec<E>,
    dk: Vec<E>,
    dv: Vec<E>,
    /// Scratch for `dL/dS`, `[max_batch, T, T]`.
    d_scores: Vec<E>,
}

impl<E> AttentionCache<E> {
    /// The lengths given by the last `set_lengths`, or `None` (no padding).
    pub fn lengths(&self) -> Option<&[usize]> {
        self.padded.map(|n| &self.lengths[..n])
    }
}

/// Above this many multiply-adds per product of scores (`batch · T² · D`), the samples of a
/// batch are split over both cores.
const PARALLEL_ATTENTION: usize = 1 << 16;

/// Multi-head self-attention, PyTorch's `nn.MultiheadAttention(D, HEADS, batch_first=True)`
/// called as `attn(x, x, x)` on sequences `[T, D]`:
///
/// ```text
/// [Q | K | V] = X W_inᵀ + b_in                          ([T, 3D])
/// head_h = softmax(Q_h K_hᵀ / √dh + M) V_h              (dh = D / HEADS, h = 0..HEADS)
/// Y = [head_0 | … | head_{HEADS-1}] W_outᵀ + b_out      ([T, D])
/// ```
///
/// `Q_h` is the columns `h·dh..(h+1)·dh` of `Q` (and so for `K`, `V`); `M` hides keys after
/// the query when `CAUSAL` (PyTorch's `attn_mask = generate_square_subsequent_mask(T)`), and the
/// keys at `length..` of a sample given a length by [`Self::set_lengths`] (PyTorch's
/// `key_padding_mask`). Queries at padded positions still produce an output, as in PyTorch.
///
/// Parameters, with PyTorch's names, layouts and initialisation: `in_proj_weight` `[3D, D]`
/// (rows: `W_q`, `W_k`, `W_v`; Xavier-uniform, U(±√(6 / (D + 3D)))), `in_proj_bias` `[3D]`
/// (0), `out_proj.weight` `[D, D]` (U(±1/√D), `nn.Linear`'s default) and `out_proj.bias`
/// `[D]` (0).
///
/// Backward: the output projection's (`dW_out += dYᵀ H`, `db_out += Σ dY`, `dH = dY W_out`),
/// [`scaled_dot_product_attention_backward`] per sample and head, then the input projection's
/// for `Q`, `K` and `V` (`dW_q += dQᵀ X`, ..., `dX = dQ W_q + dK W_k + dV W_v`). The cache keeps
/// `Q | K | V`, the probabilities and the heads' outputs, and the scratch of the backward;
/// it is sized for `max_batch` samples, so neither pass allocates. Batches of enough work
/// (`batch · T² · D >= 65536`) are split in two halves of samples over both cores.
///
/// A network passes padding lengths to this layer's cache before a forward: see
/// [`Self::set_lengths`].
#[derive(Clone, Debug, PartialEq)]
pub struct MultiHeadAttention<
    const T: usize,
    const D: usize,
    const HEADS: usize,
    const CAUSAL: bool,
    E: Float = f32,
    N: ProjectionNames = PackedNames,
> {
    /// `[3D, D]`, row-major: `W_q`, `W_k`, `W_v` stacked.
    pub in_proj_weight: Vec<E>,
    /// `[3D]`.
    pub in_proj_bias: Vec<E>,
    /// `[D, D]` (`out_proj.weight`).
    pub out_proj_weight: Vec<E>,
    /// `[D]` (`out_proj.bias`).
    pub out_proj_bias: Vec<E>,
    names: PhantomData<N>,
}

/// The names the parameters of a [`MultiHeadAttention`] are saved and loaded under. The layout
/// in memory is the same for every naming: `Q`, `K` and `V` projected by one product.
pub trait ProjectionNames: Copy + Default + std::fmt::Debug + PartialEq + Send + Sync {
    /// `None`: PyTorch's `nn.MultiheadAttention` names, `in_proj_weight` `[3D, D]`,
    /// `in_proj_bias`, `out_proj.weight`, `out_proj.bias`. `Some([q, k, v, out])`: separate
    /// projections, each a linear layer's `{name}.weight` `[D, D]` and `{name}.bias` `[D]`.
    const SEPARATE: Option<[&'static str; 4]>;
}

/// PyTorch's `nn.MultiheadAttention`: packed `in_proj_weight` and `out_proj`.
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct PackedNames;

impl ProjectionNames for PackedNames {
    const SEPARATE: Option<[&'static str; 4]> = None;
}

/// Hugging Face's `BertAttention` (BERT, MiniLM, RoBERTa): `self.query`, `self.key`,
/// `self.value` and `output.dense`.
#[derive(Copy, Clone, Default, Debug, PartialEq)]
pub struct BertNames;

impl ProjectionNames for BertNames {
    const SEPARATE: Option<[&'static str; 4]> =
        Some(["self.query", "self.key", "self.value", "output.dense"]);
}

impl<
        const T: usize,
        const D: usize,
        const HEADS: usize,
        const CAUSAL: bool,
        E: Float,
        N: ProjectionNames,
    > MultiHeadAttention<T, D, HEADS, CAUSAL, E, N>
{
    /// The width of one head, `D / HEADS`; a compile-time error unless `HEADS` divides `D`.
    pub const HEAD_DIM: usize = {
        assert!(
            HEADS > 0 && D.is_multiple_of(HEADS),
            "MultiHeadAttention: the model width D must be a multiple of the number of heads"
        );
        D / HEADS
    };

    /// A layer with every parameter zero.
    pub fn zeros() -> Self {
        Self {
            in_proj_weight: vec![E::ZERO; 3 * D * D],
            in_proj_bias: vec![E::ZERO; 3 * D],
            out_proj_weight: vec![E::ZERO; D * D],
            out_proj_bias: vec![E::ZERO; D],
            names: PhantomData,
        }
    }

    /// Every named tensor as (field, range of the field), in PyTorch's order: the four fields
    /// whole, or with separate names `W_q`, `b_q`, `W_k`, `b_k`, `W_v`, `b_v`, `W_out`, `b_out`.
    fn slices() -> impl Iterator<Item = (Field, Range<usize>)> {
        let (w, b) = (D * D, D);
        let separate = [
            (Field::InWeight, 0..w),
            (Field::InBias, 0..b),
            (Field::InWeight, w..2 * w),
            (Field::InBias, b..2 * b),
            (Field::InWeight, 2 * w..3 * w),
            (Field::InBias, 2 * b..3 * b),
            (Field::OutWeight, 0..w),
            (Field::OutBias, 0..b),
        ];
        let packed = [
            (Field::InWeight, 0..3 * w),
            (Field::InBias, 0..3 * b),
            (Field::OutWeight, 0..w),
            (Field::OutBias, 0..b),
        ];
        let mut all = separate;
        let mut count = all.len();
        if N::SEPARATE.is_none() {
            all[..packed.len()].clone_from_slice(&packed);
            count = packed.len();
        }
        all.into_iter().take(count)
    }

    /// The name and shape of the `index`-th tensor of [`Self::slices`].
    fn name_and_shape(index: usize) -> (String, Vec<usize>) {
        let shape = |weight: bool, rows: usize| if weight { vec![rows, D] } else { vec![rows] };
        match N::SEPARATE {
            Some(names) => {
                let weight = index.is_multiple_of(2);
                let suffix = if weight { "weight" } else { "bias" };
                (format!("{}.{suffix}", names[index / 2]), shape(weight, D))
            }
            None => {
                let names = [
                    "in_proj_weight",
                    "in_proj_bias",
                    "out_proj.weight",
                    "out_proj.bias",
                ];
                let rows = if index < 2 { 3 * D } else { D };
                (
                    names[index].to_string(),
                    shape(index.is_multiple_of(2), rows),
                )
            }
        }
    }

    fn field(&self, field: Field) -> &[E] {
        match field {
            Field::InWeight => &self.in_proj_weight,
            Field::InBias => &self.in_proj_bias,
            Field::OutWeight => &self.out_proj_weight,
            Field::OutBias => &self.out_proj_bias,
        }
    }

    fn field_mut(&mut self, field: Field) -> &mut [E] {
        match field {
            Field::InWeight => &mut self.in_proj_weight,
            Field::InBias => &mut self.in_proj_bias,
            Field::OutWeight => &mut self.out_proj_weight,
            Field::OutBias => &mut self.out_proj_bias,
        }
    }

    /// Sets the key-padding mask of the next forwards: sample `b` attends only to its keys
    /// `0..lengths[b]`. `lengths` must hold one length in `1..=T` per sample of the batches
    /// that follow (a forward of another batch size panics), at most the cache's `max_batch`.
    /// On error the cache is unchanged. The lengths stay until set again or cleared with
    /// [`Self::clear_lengths`]; set them before a forward, not between a forward and its
    /// backward (the backward masks with the lengths it finds).
    pub fn set_lengths(
        cache: &mut AttentionCache<E>,
        lengths: &[usize],
    ) -> Result<(), LengthsError> {
        if lengths.len() > cache.max_batch {
            return Err(LengthsError::TooMany {
                given: lengths.len(),
                max_batch: cache.max_batch,
            });
        }
        if let Some((sample, &length)) = lengths.iter().enumerate().find(|(_, &l)| l == 0 || l > T)
        {
            return Err(LengthsError::OutOfRange {
                sample,
                length,
                steps: T,
            });
        }
        cache.lengths[..lengths.len()].copy_from_slice(lengths);
        cache.lengths[lengths.len()..].fill(T);
        cache.padded = Some(lengths.len());
        Ok(())
    }

    /// Removes the key-padding mask: every sample attends to all `T` keys.
    pub fn clear_lengths(cache: &mut AttentionCache<E>) {
        cache.lengths.fill(T);
        cache.padded = None;
    }

    /// The lengths of the `batch` samples of a forward, checked against `set_lengths`.
    fn lengths_of(cache: &AttentionCache<E>, batch: usize) -> &[usize] {
        check_batch("MultiHeadAttention", batch, cache.max_batch);
        if let Some(given) = cache.padded {
            assert!(
                given == batch,
                "MultiHeadAttention: set_lengths gave {given} lengths, but this batch has {batch} samples (set the lengths of every batch, or clear_lengths)"
            );
        }
        &cache.lengths[..batch]
    }

    fn mask(length: usize) -> AttentionMask {
        AttentionMask {
            causal: CAUSAL,
            length,
        }
    }

    /// Whether the samples of a batch are split over both cores.
    fn split(batch: usize) -> bool {
        batch >= 2 && batch * T * T * D >= PARALLEL_ATTENTION
    }

    /// The forward of every sample: `Q | K | V`, the heads and the output.
    fn attend(&self, x: &[E], y: &mut [E], cache: &mut AttentionCache<E>) {
        let batch = x.len() / (T * D).max(1);
        let dh = Self::HEAD_DIM;
        let rows = batch * T;
        let AttentionCache {
            lengths,
            qkv,
            probs,
            heads,
            ..
        } = cache;
        linear_rows(
            rows,
            D,
            3 * D,
            x,
            &self.in_proj_weight,
            &self.in_proj_bias,
            qkv,
        );
        let (qkv, lengths) = (&qkv[..], &lengths[..batch]);
        // Samples `first..`, whose probabilities and head outputs are `probs` and `out`.
        let work = |first: usize, probs: &mut [E], out: &mut [E]| {
            for (s, out) in out.chunks_exact_mut((T * D).max(1)).enumerate() {
                let b = first + s;
                let base = b * T * 3 * D;
                for h in 0..HEADS {
                    scaled_dot_product_attention(
                        view(qkv, base + h * dh, T, dh, 3 * D),
                        view(qkv, base + D + h * dh, T, dh, 3 * D),
                        view(qkv, base + 2 * D + h * dh, T, dh, 3 * D),
                        Self::mask(lengths[b]),
                        &mut probs[(s * HEADS + h) * T * T..],
                        view_mut(out, h * dh, T, dh, D),
                    );
                }
            }
        };
        let probs = &mut probs[..batch * HEADS * T * T];
        let out = &mut heads[..rows * D];
        if Self::split(batch) {
            // Sample by sample from both ends (see `parallel::meet`).
            meet(
                batch,
                (probs, out),
                |(probs, out), n| {
                    let (p0, p1) = probs.split_at_mut(n * HEADS * T * T);
                    let (o0, o1) = out.split_at_mut(n * T * D);
                    ((p0, o0), (p1, o1))
                },
                |b, (probs, out)| work(b, probs, out),
            );
        } else {
            work(0, probs, out);
        }
        linear_rows(
            rows,
            D,
            D,
            &heads[..rows * D],
            &self.out_proj_weight,
            &self.out_proj_bias,
            y,
        );
    }
}

/// The four tensors of a [`MultiHeadAttention`].
#[derive(Copy, Clone, Debug)]
enum Field {
    InWeight,
    InBias,
    OutWeight,
    OutBias,
}

impl<
        const T: usize,
        const D: usize,
        const HEADS: usize,
        const CAUSAL: bool,
        E: Float,
        N: ProjectionNames,
    > Module<E> for MultiHeadAttention<T, D, HEADS, CAUSAL, E, N>
{
    type Input = Rank2<T, D>;
    type Output = Rank2<T, D>;
    type Cache = AttentionCache<E>;
    type Grads = Self;

    const PARAMS: usize = 4 * D * D + 4 * D;

    fn init(rng: &mut Rng) -> Self {
        let _ = Self::HEAD_DIM;
        let mut layer = Self::zeros();
        // xavier_uniform_ on [3D, D]: fan_in D, fan_out 3D.
        let bound = if D == 0 {
            0.0
        } else {
            (6.0 / (4 * D) as f64).sqrt()
        };
        uniform(rng, &mut layer.in_proj_weight, bound);
        fan_in_uniform(rng, &mut layer.out_proj_weight, D);
        layer
    }

    fn new_cache(&self, max_batch: usize) -> AttentionCache<E> {
        let _ = Self::HEAD_DIM;
        let sequence = max_batch * T * D;
        AttentionCache {
            max_batch,
            lengths: vec![T; max_batch],
            padded: None,
            qkv: vec![E::ZERO; 3 * sequence],
            probs: vec![E::ZERO; max_batch * HEADS * T * T],
            heads: vec![E::ZERO; sequence],
            d_heads: vec![E::ZERO; sequence],
            dq: vec![E::ZERO; sequence],
            dk: vec![E::ZERO; sequence],
            dv: vec![E::ZERO; sequence],
            d_scores: vec![E::ZERO; max_batch * T * T],
        }
    }

    fn new_grads(&self) -> Self {
        Self::zeros()
    }

    fn zero_grads(grads: &mut Self) {
        grads.in_proj_weight.fill(E::ZERO);
        grads.in_proj_bias.fill(E::ZERO);
        grads.out_proj_weight.fill(E::ZERO);
        grads.out_proj_bias.fill(E::ZERO);
    }

    fn forward(
        &self,
        x: &Tensor<Rank2<T, D>, E>,
        y: &mut Tensor<Rank2<T, D>, E>,
        cache: &mut AttentionCache<E>,
    ) {
        Self::lengths_of(cache, x.batch());
        y.set_batch(x.batch());
        self.attend(x.as_slice(), y.as_mut_slice(), cache);
    }

    fn forward_train(
        &mut self,
        x: &Tensor<Rank2<T, D>, E>,
        y: &mut Tensor<Rank2<T, D>, E>,
        cache: &mut AttentionCache<E>,
    ) {
        self.forward(x, y, cache);
    }

    fn backward(
        &self,
        x: &Tensor<Rank2<T, D>, E>,
        _y: &Tensor<Rank2<T, D>, E>,
        dy: &Tensor<Rank2<T, D>, E>,
        dx: Option<&mut Tensor<Rank2<T, D>, E>>,
        cache: &mut AttentionCache<E>,
        grads: &mut Self,
    ) {
        let batch = x.batch();
        Self::lengths_of(cache, batch);
        let dh = Self::HEAD_DIM;
        let rows = batch * T;
        let sequence = rows * D;
        let AttentionCache {
            lengths,
            qkv,
            probs,
            heads,
            d_heads,
            dq,
            dk,
            dv,
            d_scores,
            ..
        } = cache;
        // The output projection: dW_out += dYᵀ H, db_out += Σ dY, dH = dY W_out.
        linear_rows_backward(
            rows,
            D,
            D,
            &heads[..sequence],
            &self.out_proj_weight,
            dy.as_slice(),
            &mut grads.out_proj_weight,
            &mut grads.out_proj_bias,
            Some(&mut d_heads[..sequence]),
        );
        // Every head of every sample.
        let (qkv, probs, d_heads, lengths) = (&qkv[..], &probs[..], &d_heads[..], &lengths[..]);
        // Samples `first..`, whose gradients and scratch are `dq`, `dk`, `dv` and `ds`.
        let work = |first: usize, dq: &mut [E], dk: &mut [E], dv: &mut [E], ds: &mut [E]| {
            for s in 0..dq.len() / (T * D).max(1) {
                let b = first + s;
                let base = b * T * 3 * D;
                for h in 0..HEADS {
                    let at = s * T * D + h * dh;
                    scaled_dot_product_attention_backward(
                        view(qkv, base + h * dh, T, dh, 3 * D),
                        view(qkv, base + D + h * dh, T, dh, 3 * D),
                        view(qkv, base + 2 * D + h * dh, T, dh, 3 * D),
                        Self::mask(lengths[b]),
                        &probs[(b * HEADS + h) * T * T..],
                        view(d_heads, b * T * D + h * dh, T, dh, D),
                        &mut ds[s * T * T..],
                        view_mut(dq, at, T, dh, D),
                        view_mut(dk, at, T, dh, D),
                        view_mut(dv, at, T, dh, D),
                    );
                }
            }
        };
        let (dq, dk, dv) = (
            &mut dq[..sequence],
            &mut dk[..sequence],
            &mut dv[..sequence],
        );
        let ds = &mut d_scores[..batch * T * T];
        if Self::split(batch) {
            meet(
                batch,
                (&mut *dq, &mut *dk, &mut *dv, ds),
                |(dq, dk, dv, ds), n| {
                    let (q0, q1) = dq.split_at_mut(n * T * D);
                    let (k0, k1) = dk.split_at_mut(n * T * D);
                    let (v0, v1) = dv.split_at_mut(n * T * D);
                    let (s0, s1) = ds.split_at_mut(n * T * T);
                    ((q0, k0, v0, s0), (q1, k1, v1, s1))
                },
                |b, (dq, dk, dv, ds)| work(b, dq, dk, dv, ds),
            );
        } else {
            work(0, dq, dk, dv, ds);
        }
        // The input projection, block by block: dW_q += dQᵀ X, db_q += Σ dQ, and so for K, V.
        let x = x.as_slice();
        let mut dx = dx.map(|dx| {
            dx.set_batch(batch);
            dx.as_mut_slice()
        });
        for (block, d) in [&dq[..], &dk[..], &dv[..]].into_iter().enumerate() {
            add_row_sums(d, &mut grads.in_proj_bias[block * D..(block + 1) * D]);
            matmul(
                MatRef::transposed(d, rows, D),
                MatRef::row_major(x, rows, D),
                MatMut::row_major(
                    &mut grads.in_proj_weight[block * D * D..(block + 1) * D * D],
                    D,
                    D,
                ),
                true,
            );
            // dX = dQ W_q + dK W_k + dV W_v.
            if let Some(dx) = dx.as_deref_mut() {
                matmul(
                    MatRef::row_major(d, rows, D),
                    MatRef::row_major(&self.in_proj_weight[block * D * D..], D, D),
                    MatMut::row_major(dx, rows, D),
                    block > 0,
                );
            }
        }
    }

    fn set_padding(
        &self,
        cache: &mut AttentionCache<E>,
        lengths: Option<&[usize]>,
    ) -> Result<(), LengthsError> {
        match lengths {
            Some(lengths) => Self::set_lengths(cache, lengths),
            None => {
                Self::clear_lengths(cache);
                Ok(())
            }
        }
    }

    // Written out rather than with `parameters!`: one tensor in memory may be several
    // under separate names, and every visitor must list the same slices in the same order.
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(Param<'_, E>)) {
        for (index, (field, range)) in Self::slices().enumerate() {
            let (name, shape) = Self::name_and_shape(index);
            f(Param {
                name: &join_name(prefix, &name),
                shape: &shape,
                values: &self.field(field)[range],
            });
        }
    }

    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(ParamMut<'_, E>)) {
        for (index, (field, range)) in Self::slices().enumerate() {
            let (name, shape) = Self::name_and_shape(index);
            f(ParamMut {
                name: &join_name(prefix, &name),
                shape: &shape,
                values: &mut self.field_mut(field)[range],
            });
        }
    }

    fn visit_params_and_grads(&mut self, grads: &Self, f: &mut dyn FnMut(&mut [E], &[E])) {
        for (field, range) in Self::slices() {
            f(
                &mut self.field_mut(field)[range.clone()],
                &grads.field(field)[range],
            );
        }
    }

    fn visit_grads_mut(&self, grads: &mut Self, f: &mut dyn FnMut(&mut [E])) {
        for (field, range) in Self::slices() {
            f(&mut grads.field_mut(field)[range]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_module, random_tensor};
    use crate::init::rng;
    use crate::layers::sequence::testing::{
        assert_close, check_f32_agrees_with_f64, check_gradients, run, Fixture,
    };

    type Mha<const T: usize, const D: usize, const H: usize, const C: bool> =
        MultiHeadAttention<T, D, H, C, f64>;

    /// Identity projections (`Q = K = V = X`, `Y = heads`), no biases.
    fn identity<const T: usize, const D: usize, const H: usize, const C: bool>() -> Mha<T, D, H, C>
    {
        let mut layer = Mha::<T, D, H, C>::zeros();
        for block in 0..3 {
            for i in 0..D {
                layer.in_proj_weight[(block * D + i) * D + i] = 1.0;
            }
        }
        for i in 0..D {
            layer.out_proj_weight[i * D + i] = 1.0;
        }
        layer
    }

    fn forward<const T: usize, const D: usize, const H: usize, const C: bool>(
        layer: &Mha<T, D, H, C>,
        x: &[f64],
        lengths: Option<&[usize]>,
    ) -> Vec<f64> {
        let x = Tensor::<Rank2<T, D>, f64>::from_vec(x.to_vec()).unwrap();
        let mut cache = layer.new_cache(x.batch());
        if let Some(lengths) = lengths {
            Mha::<T, D, H, C>::set_lengths(&mut cache, lengths).unwrap();
        }
        let mut y = Tensor::zeros(0);
        layer.forward(&x, &mut y, &mut cache);
        y.into_vec()
    }

    #[test]
    fn one_head_attends_by_scaled_dot_products() {
        // X = I (two steps), so S = X Xᵀ / √2 = I / √2 and the output rows are the softmax rows.
        let a = 1.0 / 2f64.sqrt();
        let sigma = 1.0 / (1.0 + (-a).exp());
        let x = [1.0, 0.0, 0.0, 1.0];
        let y = forward(&identity::<2, 2, 1, false>(), &x, None);
        assert_close("plain", &y, &[sigma, 1.0 - sigma, 1.0 - sigma, sigma]);
        // Causal: step 0 sees only itself.
        let y = forward(&identity::<2, 2, 1, true>(), &x, None);
        assert_close("causal", &y, &[1.0, 0.0, 1.0 - sigma, sigma]);
        // Length 1: both steps see only step 0.
        let y = forward(&identity::<2, 2, 1, false>(), &x, Some(&[1]));
        assert_close("padded", &y, &[1.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn each_head_attends_over_its_own_columns() {
        // Two heads of width 1: head 0 sees column 0 ([1, 0]), head 1 column 1 ([0, 1]), each
        // with scale 1. Head 0: S = [[1, 0], [0, 0]]; head 1: S = [[0, 0], [0, 1]].
        let s1 = 1.0 / (1.0 + (-1f64).exp());
        let y = forward(&identity::<2, 2, 2, false>(), &[1.0, 0.0, 0.0, 1.0], None);
        assert_close("two heads", &y, &[s1, 0.5, 0.5, s1]);
        // Biases: b_v shifts V (the probabilities sum to 1), b_out shifts the output.
        let mut layer = identity::<2, 2, 2, false>();
        layer.in_proj_bias[4..].copy_from_slice(&[10.0, 20.0]);
        layer.out_proj_bias.copy_from_slice(&[100.0, 200.0]);
        let y = forward(&layer, &[1.0, 0.0, 0.0, 1.0], None);
        assert_close("biases", &y, &[s1 + 110.0, 220.5, 110.5, s1 + 220.0]);
    }

    #[test]
    fn hidden_keys_get_probability_zero_and_rows_sum_to_one() {
        let layer = Mha::<6, 4, 2, true>::init(&mut rng(1));
        let x = random_tensor::<Rank2<6, 4>>(&mut rng(2), 2);
        let mut cache = layer.new_cache(2);
        Mha::<6, 4, 2, true>::set_lengths(&mut cache, &[6, 4]).unwrap();
        let mut y = Tensor::zeros(0);
        layer.forward(&x, &mut y, &mut cache);
        for b in 0..2 {
            for h in 0..2 {
                for i in 0..6 {
                    let row = &cache.probs[((b * 2 + h) * 6 + i) * 6..][..6];
                    let seen = (i + 1).min([6, 4][b]);
                    assert!(row[..seen].iter().all(|p| *p > 0.0), "{row:?}");
                    assert!(row[seen..].iter().all(|p| *p == 0.0), "{row:?}");
                    assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-15);
                }
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_module::<Mha<5, 8, 2, false>>(3, 1);
        check_module::<Mha<5, 8, 2, true>>(3, 2);
        check_module::<Mha<3, 4, 1, false>>(2, 3);
        check_module::<Mha<4, 6, 3, true>>(2, 4);
        check_module::<Mha<1, 4, 4, true>>(2, 5);
        // batch · T² · D = 65536: the samples split over both cores, the products packed.
        check_module::<Mha<16, 64, 4, true>>(4, 6);
        check_module::<Mha<16, 64, 4, false>>(4, 7);
    }

    #[test]
    fn gradients_match_finite_differences_with_padding() {
        fn padded<const T: usize, const D: usize, const H: usize, const C: bool>(
            lengths: &'static [usize],
            seed: u64,
        ) {
            let mut rng = rng(seed);
            let mut layer = Mha::<T, D, H, C>::init(&mut rng);
            // Non-zero biases, so that their gradients are exercised through the products.
            crate::init::uniform(&mut rng, &mut layer.in_proj_bias, 0.5);
            crate::init::uniform(&mut rng, &mut layer.out_proj_bias, 0.5);
            let x = random_tensor(&mut rng, lengths.len());
            let prepare = |cache: &mut AttentionCache<f64>| {
                Mha::<T, D, H, C>::set_lengths(cache, lengths).unwrap()
            };
            let run = check_gradients(&layer, &x, &prepare, true, seed);
            // The input at padded positions still matters (their queries produce outputs),
            // but not through keys or values: a padded step feeds only its own output row.
            assert!(run.input_grad.iter().all(|g| g.is_finite()));
        }
        padded::<5, 8, 2, false>(&[5, 2, 1], 11);
        padded::<5, 8, 2, true>(&[3, 5, 1], 12);
        padded::<4, 6, 3, true>(&[2, 4], 13);
    }

    /// A batch large enough to be split over both cores gives what its samples give one by
    /// one (each too small to be split): the same outputs and input gradients, and parameter
    /// gradients that sum those of the samples.
    fn check_split_equals_samples<const C: bool>(lengths: &[usize], seed: u64) {
        type Layer<const C: bool> = Mha<16, 32, 4, C>;
        let batch = lengths.len();
        assert!(Layer::<C>::split(batch) && !Layer::<C>::split(1));
        let mut rng = rng(seed);
        let mut layer = Layer::<C>::init(&mut rng);
        crate::init::uniform(&mut rng, &mut layer.in_proj_bias, 0.5);
        let x = random_tensor::<Rank2<16, 32>>(&mut rng, batch);
        let r = random_tensor::<Rank2<16, 32>>(&mut rng, batch);
        let mut cache = layer.new_cache(batch);
        Layer::<C>::set_lengths(&mut cache, lengths).unwrap();
        let whole = run(&mut layer, &mut cache, &x, &r);
        let mut grads: Vec<Vec<f64>> = whole
            .grads
            .iter()
            .map(|(_, g)| vec![0.0; g.len()])
            .collect();
        let mut cache = layer.new_cache(1);
        for (b, length) in lengths.iter().enumerate() {
            let xb = Tensor::from_vec(x.sample(b).to_vec()).unwrap();
            let rb = Tensor::from_vec(r.sample(b).to_vec()).unwrap();
            Layer::<C>::set_lengths(&mut cache, &[*length]).unwrap();
            let one = run(&mut layer, &mut cache, &xb, &rb);
            let n = 16 * 32;
            assert_close("y", &one.output, &whole.output[b * n..(b + 1) * n]);
            assert_close("dx", &one.input_grad, &whole.input_grad[b * n..(b + 1) * n]);
            for (sum, (_, g)) in grads.iter_mut().zip(&one.grads) {
                sum.iter_mut().zip(g).for_each(|(s, g)| *s += g);
            }
        }
        for ((name, g), sum) in whole.grads.iter().zip(&grads) {
            assert_close(name, g, sum);
        }
    }

    #[test]
    fn splitting_the_batch_over_both_cores_changes_nothing() {
        check_split_equals_samples::<false>(&[16, 3, 9, 1, 16, 5, 12, 2], 14);
        check_split_equals_samples::<true>(&[1, 16, 7, 8, 3, 16, 15, 4, 16], 15);
    }

    #[test]
    fn padded_keys_and_values_do_not_reach_the_other_steps() {
        // Changing the input at padded positions changes only those positions' outputs.
        let layer = Mha::<5, 8, 2, false>::init(&mut rng(3));
        let x = random_tensor::<Rank2<5, 8>>(&mut rng(4), 1);
        let mut changed = x.clone();
        for v in &mut changed.as_mut_slice()[3 * 8..] {
            *v += 1.0;
        }
        let a = forward(&layer, x.as_slice(), Some(&[3]));
        let b = forward(&layer, changed.as_slice(), Some(&[3]));
        assert_eq!(a[..3 * 8], b[..3 * 8]);
        assert_ne!(a[3 * 8..], b[3 * 8..]);
    }

    #[test]
    fn matches_pytorch() {
        let fixture = Fixture::open("../transformer/attention.safetensors");
        let x = fixture.tensor::<Rank2<5, 8>>("input");
        let r = fixture.tensor::<Rank2<5, 8>>("r");
        let lengths: Vec<usize> = fixture
            .values("lengths")
            .iter()
            .map(|v| *v as usize)
            .collect();
        let mut plain = Mha::<5, 8, 2, false>::zeros();
        fixture.load(&mut plain);
        let mut causal = Mha::<5, 8, 2, true>::zeros();
        fixture.load(&mut causal);
        for padding in [false, true] {
            let mut cache = plain.new_cache(2);
            let mut causal_cache = causal.new_cache(2);
            if padding {
                Mha::<5, 8, 2, false>::set_lengths(&mut cache, &lengths).unwrap();
                Mha::<5, 8, 2, true>::set_lengths(&mut causal_cache, &lengths).unwrap();
            }
            let (a, b) = if padding {
                ("padded.", "causal_padded.")
            } else {
                ("plain.", "causal.")
            };
            run(&mut plain, &mut cache, &x, &r).assert_matches(&fixture, a);
            run(&mut causal, &mut causal_cache, &x, &r).assert_matches(&fixture, b);
        }
    }

    #[test]
    fn f32_agrees_with_f64_at_the_w7_size() {
        check_f32_agrees_with_f64::<
            MultiHeadAttention<64, 128, 4, true, f32>,
            MultiHeadAttention<64, 128, 4, true, f64>,
        >(4, 21);
        check_f32_agrees_with_f64::<
            MultiHeadAttention<8, 16, 2, false, f32>,
            MultiHeadAttention<8, 16, 2, false, f64>,
        >(3, 22);
    }

    #[test]
    fn set_lengths_checks_every_length_and_changes_nothing_on_error() {
        type Layer = Mha<4, 4, 2, true>;
        let layer = Layer::zeros();
        let mut cache = layer.new_cache(3);
        assert_eq!(cache.lengths(), None);
        assert_eq!(
            Layer::set_lengths(&mut cache, &[4, 4, 4, 4]),
            Err(LengthsError::TooMany {
                given: 4,
                max_batch: 3
            })
        );
        let err = Layer::set_lengths(&mut cache, &[4, 0]).unwrap_err();
        assert_eq!(
            err,
            LengthsError::OutOfRange {
                sample: 1,
                length: 0,
                steps: 4
            }
        );
        assert!(err.to_string().contains("1..=4"), "{err}");
        assert!(Layer::set_lengths(&mut cache, &[5]).is_err());
        assert_eq!(cache.lengths(), None, "unchanged after errors");
        Layer::set_lengths(&mut cache, &[1, 4]).unwrap();
        assert_eq!(cache.lengths(), Some(&[1, 4][..]));
        Layer::clear_lengths(&mut cache);
        assert_eq!(cache.lengths(), None);
    }

    #[test]
    #[should_panic(expected = "set_lengths gave 2 lengths, but this batch has 3 samples")]
    fn a_batch_of_another_size_than_its_lengths_panics() {
        type Layer = Mha<4, 4, 2, false>;
        let layer = Layer::zeros();
        let mut cache = layer.new_cache(3);
        Layer::set_lengths(&mut cache, &[1, 4]).unwrap();
        let mut y = Tensor::zeros(0);
        layer.forward(&Tensor::zeros(3), &mut y, &mut cache);
    }

    #[test]
    fn bert_names_split_the_packed_projection_into_query_key_value() {
        let mut layer = MultiHeadAttention::<4, 6, 2, false, f64, BertNames>::zeros();
        for (i, v) in layer.in_proj_weight.iter_mut().enumerate() {
            *v = i as f64;
        }
        layer.in_proj_bias = (0..18).map(f64::from).collect();
        let mut seen = Vec::new();
        layer.visit_params("encoder.layer.0.attention", &mut |p| {
            seen.push((p.name.to_string(), p.shape.to_vec(), p.values[0]))
        });
        let at = |name: &str, shape: Vec<usize>, first: f64| {
            (format!("encoder.layer.0.attention.{name}"), shape, first)
        };
        assert_eq!(
            seen,
            vec![
                at("self.query.weight", vec![6, 6], 0.0),
                at("self.query.bias", vec![6], 0.0),
                at("self.key.weight", vec![6, 6], 36.0),
                at("self.key.bias", vec![6], 6.0),
                at("self.value.weight", vec![6, 6], 72.0),
                at("self.value.bias", vec![6], 12.0),
                at("output.dense.weight", vec![6, 6], 0.0),
                at("output.dense.bias", vec![6], 0.0),
            ]
        );
        // The optimizers' and the clipping's visitors see the same eight slices.
        let mut grads = layer.new_grads();
        let mut lengths = Vec::new();
        layer.visit_grads_mut(&mut grads, &mut |g| lengths.push(g.len()));
        assert_eq!(lengths, [36, 6, 36, 6, 36, 6, 36, 6]);
        let mut pairs = Vec::new();
        layer.visit_params_and_grads(&grads, &mut |p, g| pairs.push((p[0], g.len())));
        let firsts: Vec<f64> = seen.iter().map(|s| s.2).collect();
        assert_eq!(pairs.iter().map(|p| p.0).collect::<Vec<_>>(), firsts);
        // Same computation as the packed naming.
        check_module::<MultiHeadAttention<3, 4, 2, true, f64, BertNames>>(2, 5);
    }

    #[test]
    fn init_names_and_shapes_follow_pytorch() {
        let layer = MultiHeadAttention::<4, 8, 2, true, f32>::init(&mut rng(9));
        let bound = (6.0f32 / 32.0).sqrt();
        assert!(layer.in_proj_weight.iter().all(|w| w.abs() <= bound));
        assert!(layer.in_proj_weight.iter().any(|w| w.abs() > 0.8 * bound));
        assert!(layer
            .out_proj_weight
            .iter()
            .all(|w| w.abs() <= 1.0 / 8f32.sqrt()));
        assert!(layer
            .in_proj_bias
            .iter()
            .chain(&layer.out_proj_bias)
            .all(|b| *b == 0.0));
        let mut seen = Vec::new();
        layer.visit_params("blocks.0.self_attn", &mut |p| {
            seen.push((p.name.to_string(), p.shape.to_vec()))
        });
        let expected = [
            ("blocks.0.self_attn.in_proj_weight", vec![24, 8]),
            ("blocks.0.self_attn.in_proj_bias", vec![24]),
            ("blocks.0.self_attn.out_proj.weight", vec![8, 8]),
            ("blocks.0.self_attn.out_proj.bias", vec![8]),
        ];
        assert_eq!(seen, expected.map(|(n, s)| (n.to_string(), s)).to_vec());
        assert_eq!(
            <MultiHeadAttention<4, 8, 2, true, f32> as Module<f32>>::PARAMS,
            24 * 8 + 24 + 64 + 8
        );
        let mut count = 0;
        let mut grads = layer.new_grads();
        layer.visit_grads_mut(&mut grads, &mut |g| count += g.len());
        assert_eq!(count, 24 * 8 + 24 + 64 + 8);
    }

    #[test]
    fn gradients_accumulate_and_dx_is_optional() {
        type Layer = Mha<5, 8, 2, true>;
        let mut layer = Layer::init(&mut rng(5));
        let x = random_tensor::<Rank2<5, 8>>(&mut rng(6), 2);
        let r = random_tensor::<Rank2<5, 8>>(&mut rng(7), 2);
        let mut cache = layer.new_cache(4);
        let once = run(&mut layer, &mut cache, &x, &r);
        let mut y = Tensor::zeros(0);
        layer.forward_train(&x, &mut y, &mut cache);
        let mut grads = layer.new_grads();
        layer.backward(&x, &y, &r, None, &mut cache, &mut grads);
        layer.backward(&x, &y, &r, None, &mut cache, &mut grads);
        let mut twice = Vec::new();
        layer.visit_params_and_grads(&grads, &mut |_, g| twice.push(g.to_vec()));
        for ((name, g1), g2) in once.grads.iter().zip(&twice) {
            let doubled: Vec<f64> = g1.iter().map(|g| 2.0 * g).collect();
            assert_close(name, g2, &doubled);
        }
    }
}
