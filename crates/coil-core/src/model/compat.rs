//! The seam to the matrix kernels (`crate::kernels::matmul`) and the thread pool
//! (`crate::threads`): the model code only goes through the names here.

use crate::error::Result;
pub(crate) use crate::kernels::matmul::{get_rows, WeightRef};
pub(crate) use crate::threads::{physical_cores, ThreadPool};

/// `out[t*n_rows + r] = Σ_c W[r,c]·x[t*n_cols + c]` for `t < n_tokens`. The buffers are sized by
/// the caller from validated shapes; the kernel asserts that.
#[inline]
pub(crate) fn matmul(w: &WeightRef, x: &[f32], n_tokens: usize, out: &mut [f32], pool: &ThreadPool) -> Result<()> {
    crate::kernels::matmul::matmul(w, x, n_tokens, out, pool);
    Ok(())
}

/// Raw pointer that may cross threads: for kernels whose tasks write disjoint parts of a buffer.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: only used to hand disjoint regions of one buffer to the tasks of a single `run`, which
// all finish before the buffer is touched again.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
