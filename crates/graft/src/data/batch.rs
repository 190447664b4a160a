//! Batches: rows of token ids, next-token targets and a loss mask built from positions.

use super::{DataError, Example};
use candle_core::{Device, Tensor};

/// One micro-batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids `[b, t]` (u32).
    pub ids: Tensor,
    /// Next-token targets `[b, t]` (u32): `targets[r][i] = ids[r][i+1]`.
    pub targets: Tensor,
    /// Loss mask `[b, t]` (f32): 1 where `targets[r][i]` is a supervised token.
    pub mask: Tensor,
    /// Number of 1s in `mask`.
    pub n_targets: usize,
    /// Real (non-padding) tokens in the batch.
    pub n_tokens: usize,
}

/// A row before it becomes tensors: ids and the supervision flag of each id.
struct Row {
    ids: Vec<u32>,
    supervised: Vec<bool>,
}

fn rows_of(examples: &[Example], seq_len: usize, packing: bool) -> Vec<Row> {
    if !packing {
        return examples.iter().map(|e| Row { ids: e.ids.clone(), supervised: e.supervised.clone() }).collect();
    }
    // Constant-length packing: samples (each ending in EOS) are concatenated and cut into rows
    // of `seq_len + 1` tokens that overlap by one, so every token after the first is a target
    // exactly once (the last token of a row is the first of the next). Attention may cross
    // sample boundaries.
    let stream: Vec<(u32, bool)> =
        examples.iter().flat_map(|e| e.ids.iter().copied().zip(e.supervised.iter().copied())).collect();
    let mut rows = Vec::new();
    let mut start = 0;
    while start + 1 < stream.len() {
        let end = (start + seq_len + 1).min(stream.len());
        let (ids, supervised) = stream[start..end].iter().copied().unzip();
        rows.push(Row { ids, supervised });
        start = end - 1;
    }
    rows
}

/// Groups `examples` (in order) into batches of `batch_size` rows, padded with `pad_id` to the
/// longest row of each batch; with `packing`, samples are first packed into rows of `seq_len`.
pub fn make_batches(examples: &[Example], batch_size: usize, seq_len: usize, packing: bool, pad_id: u32, device: &Device) -> Result<Vec<Batch>, candle_core::Error> {
    let rows = rows_of(examples, seq_len, packing);
    let mut out = Vec::with_capacity(rows.len().div_ceil(batch_size.max(1)));
    for chunk in rows.chunks(batch_size.max(1)) {
        let width = chunk.iter().map(|r| r.ids.len()).max().unwrap_or(0);
        let (mut ids, mut targets, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        let (mut n_targets, mut n_tokens) = (0usize, 0usize);
        for r in chunk {
            n_tokens += r.ids.len();
            for i in 0..width {
                ids.push(r.ids.get(i).copied().unwrap_or(pad_id));
                let next = i + 1;
                let (t, m) = match (r.ids.get(next), r.supervised.get(next)) {
                    (Some(&t), Some(&true)) => (t, 1f32),
                    (Some(&t), _) => (t, 0.0),
                    _ => (pad_id, 0.0),
                };
                targets.push(t);
                mask.push(m);
                n_targets += m as usize;
            }
        }
        let b = chunk.len();
        out.push(Batch {
            ids: Tensor::from_vec(ids, (b, width), device)?,
            targets: Tensor::from_vec(targets, (b, width), device)?,
            mask: Tensor::from_vec(mask, (b, width), device)?,
            n_targets,
            n_tokens,
        });
    }
    Ok(out)
}

impl From<candle_core::Error> for DataError {
    fn from(e: candle_core::Error) -> Self {
        DataError::Render { path: Default::default(), line: 0, reason: e.to_string() }
    }
}
