//! Examples → micro-batches of ids, next-token targets and a loss mask built from positions.
//!
//! The mask never looks at token ids: SmolLM2's pad token is its EOS, and masking by id would
//! hide every real EOS from the loss and teach the model never to stop.

use super::{DataError, Example};
use candle_core::{Device, Tensor};

/// One micro-batch of `b` rows of `t` positions.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Input ids `[b, t]` (u32); padding positions hold the pad id.
    pub ids: Tensor,
    /// Next-token targets `[b, t]` (u32): `targets[r][i]` is the token after `ids[r][i]` (the pad
    /// id where there is none).
    pub targets: Tensor,
    /// Loss mask `[b, t]` (f32): 1 where `targets[r][i]` is a supervised token, else 0.
    pub mask: Tensor,
    /// Number of 1s in `mask` (the loss is summed over these and divided by their count).
    pub n_targets: usize,
    /// Non-padding positions in `ids`.
    pub n_tokens: usize,
}

/// Groups `examples`, in order, into batches of `batch_size` rows (the last batch may be smaller).
///
/// - Without `packing`, each example is one row; a batch is padded with `pad_id` to its longest
///   row (`t ≤ seq_len`; a longer example is [`DataError::ExampleTooLong`]). The last token of a
///   row has no target.
/// - With `packing`, the examples (each ending with its EOS) are concatenated into one stream cut
///   into rows of exactly `seq_len` tokens; the last row is padded. The target of a row's last
///   position is the first token of the next row, so every token of the stream after the first
///   is a target exactly once. Attention may cross example boundaries inside a row.
///
/// In both modes `mask[r][i]` is the supervision flag of the token at `targets[r][i]`, and the
/// first token of an example is never supervised, so no example is trained to follow the
/// previous one: the batches of a set of examples have `n_targets` summing to their supervised
/// token count, packed or not.
pub fn make_batches(
    examples: &[Example],
    batch_size: usize,
    seq_len: usize,
    packing: bool,
    pad_id: u32,
    device: &Device,
) -> Result<Vec<Batch>, DataError> {
    if batch_size == 0 {
        return Err(DataError::Argument("batch_size must be at least 1".into()));
    }
    if seq_len == 0 {
        return Err(DataError::Argument("seq_len must be at least 1".into()));
    }
    for (index, ex) in examples.iter().enumerate() {
        if ex.ids.len() != ex.supervised.len() {
            return Err(DataError::Argument(format!(
                "example {index} has {} ids and {} supervision flags",
                ex.ids.len(),
                ex.supervised.len()
            )));
        }
        if !packing && ex.ids.len() > seq_len {
            return Err(DataError::ExampleTooLong { index, len: ex.ids.len(), seq_len });
        }
    }
    let rows = if packing { packed_rows(examples, seq_len) } else { padded_rows(examples) };
    // Packed rows are all `seq_len` wide (the last one padded); padded batches are as wide as
    // their longest row.
    let min_width = if packing { seq_len } else { 0 };
    rows.chunks(batch_size).map(|chunk| to_batch(chunk, min_width, pad_id, device)).collect()
}

/// A row before it becomes tensors.
struct Row {
    /// `(id, supervised)` of the row's tokens.
    tokens: Vec<(u32, bool)>,
    /// The token after the row's last one, when the stream continues (packing).
    next: Option<(u32, bool)>,
}

fn padded_rows(examples: &[Example]) -> Vec<Row> {
    examples
        .iter()
        .map(|ex| Row { tokens: ex.ids.iter().copied().zip(ex.supervised.iter().copied()).collect(), next: None })
        .collect()
}

fn packed_rows(examples: &[Example], seq_len: usize) -> Vec<Row> {
    let stream: Vec<(u32, bool)> =
        examples.iter().flat_map(|ex| ex.ids.iter().copied().zip(ex.supervised.iter().copied())).collect();
    stream
        .chunks(seq_len)
        .enumerate()
        .map(|(r, tokens)| Row { tokens: tokens.to_vec(), next: stream.get((r + 1) * seq_len).copied() })
        .collect()
}

fn to_batch(rows: &[Row], min_width: usize, pad_id: u32, device: &Device) -> Result<Batch, DataError> {
    let width = rows.iter().map(|r| r.tokens.len()).max().unwrap_or(0).max(min_width);
    let size = rows.len() * width;
    let (mut ids, mut targets, mut mask) =
        (Vec::with_capacity(size), Vec::with_capacity(size), Vec::with_capacity(size));
    let (mut n_targets, mut n_tokens) = (0, 0);
    for row in rows {
        n_tokens += row.tokens.len();
        for i in 0..width {
            ids.push(row.tokens.get(i).map_or(pad_id, |t| t.0));
            let next = if i + 1 < row.tokens.len() {
                Some(row.tokens[i + 1])
            } else if i + 1 == row.tokens.len() {
                row.next
            } else {
                None
            };
            let (target, supervised) = next.unwrap_or((pad_id, false));
            targets.push(target);
            mask.push(if supervised { 1f32 } else { 0.0 });
            n_targets += usize::from(supervised);
        }
    }
    let shape = (rows.len(), width);
    Ok(Batch {
        ids: Tensor::from_vec(ids, shape, device)?,
        targets: Tensor::from_vec(targets, shape, device)?,
        mask: Tensor::from_vec(mask, shape, device)?,
        n_targets,
        n_tokens,
    })
}
