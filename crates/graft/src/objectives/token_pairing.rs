//! The positions a cross-tokenizer distillation compares: each example is rendered for the
//! student's tokenizer and for the teacher's (`data::load_paired_examples`), and the student's
//! supervised positions are paired with the teacher's in order, per example, up to the shorter
//! of the two — the `i`-th answer token of the student with the `i`-th answer token of the
//! teacher, as the Universal Logit Distillation paper aligns them (Boizard et al. 2024). No
//! character offsets are needed; where the two tokenizers split the answer differently, the
//! pairs drift apart after the first difference (docs/distillation.md).

use crate::data::{make_batches, Batch, DataError, Example};
use candle_core::{Device, Tensor};

/// A micro-batch of cross-tokenizer distillation: the student's batch, the teacher's input ids
/// of the same examples in the same rows, and for every student position the teacher position
/// paired with it.
#[derive(Debug, Clone)]
pub struct PairedBatch {
    /// The student's micro-batch, exactly as plain training builds it.
    pub student: Batch,
    /// The teacher's input ids `[b, t_t]` (u32), padded with the teacher's pad id.
    pub teacher_ids: Tensor,
    /// `[b, t]` (u32): for student position `(r, i)`, the flat position `r · t_t + j` of the
    /// teacher's states whose next token is paired with the student's target at `(r, i)`; 0 where
    /// none is.
    pub teacher_pos: Tensor,
    /// `[b, t]` (f32): 1 where the student position has a teacher position paired with it.
    pub paired: Tensor,
    /// Number of 1s in `paired`.
    pub n_pairs: usize,
}

/// The positions of `ex`'s supervised targets: position `i` predicts token `i + 1`, so these
/// are the `i` with `supervised[i + 1]` (the loss-mask positions of its batch row).
fn target_positions(ex: &Example) -> impl Iterator<Item = usize> + '_ {
    ex.supervised.iter().enumerate().skip(1).filter(|(_, &s)| s).map(|(j, _)| j - 1)
}

/// `(student position, teacher position)` pairs of one example rendered both ways: the `i`-th
/// supervised target of each, for `i` below the shorter count.
pub fn pair_positions(student: &Example, teacher: &Example) -> Vec<(usize, usize)> {
    target_positions(student).zip(target_positions(teacher)).collect()
}

/// Groups `items` (student example, teacher example), in order, into micro-batches of
/// `batch_size` rows, each side padded to its longest row (no packing); the student's batches
/// are those `make_batches` builds from the student examples alone.
pub fn make_paired_batches(
    items: &[(Example, Example)],
    batch_size: usize,
    seq_len: usize,
    (pad, teacher_pad): (u32, u32),
    device: &Device,
) -> Result<Vec<PairedBatch>, DataError> {
    if batch_size == 0 {
        return Err(DataError::Argument("batch_size must be at least 1".into()));
    }
    let mut out = Vec::with_capacity(items.len().div_ceil(batch_size));
    for chunk in items.chunks(batch_size) {
        let students: Vec<Example> = chunk.iter().map(|(s, _)| s.clone()).collect();
        let teachers: Vec<Example> = chunk.iter().map(|(_, t)| t.clone()).collect();
        let one = |batches: Vec<Batch>| batches.into_iter().next().ok_or(DataError::Argument("an empty batch".into()));
        let student = one(make_batches(&students, chunk.len(), seq_len, false, pad, device)?)?;
        let teacher = one(make_batches(&teachers, chunk.len(), seq_len, false, teacher_pad, device)?)?;
        let (b, t) = student.ids.dims2()?;
        let t_t = teacher.ids.dims2()?.1;
        let (mut pos, mut paired) = (vec![0u32; b * t], vec![0f32; b * t]);
        let mut n_pairs = 0;
        for (r, (s, te)) in chunk.iter().enumerate() {
            for (i, j) in pair_positions(s, te) {
                pos[r * t + i] = (r * t_t + j) as u32;
                paired[r * t + i] = 1.0;
                n_pairs += 1;
            }
        }
        out.push(PairedBatch {
            teacher_ids: teacher.ids,
            teacher_pos: Tensor::from_vec(pos, (b, t), device)?,
            paired: Tensor::from_vec(paired, (b, t), device)?,
            n_pairs,
            student,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ids: &[u32], sup: &str) -> Example {
        Example { ids: ids.to_vec(), supervised: sup.chars().map(|c| c == 's').collect() }
    }

    #[test]
    fn answers_pair_in_order_up_to_the_shorter() {
        // Student: prompt of 3, answer of 3; teacher: prompt of 2, answer of 2.
        let (s, t) = (ex(&[1, 2, 3, 4, 5, 6], "pppsss"), ex(&[7, 8, 9, 10], "ppss"));
        assert_eq!(pair_positions(&s, &t), vec![(2, 1), (3, 2)]);
        assert_eq!(pair_positions(&s, &s), vec![(2, 2), (3, 3), (4, 4)], "one tokenizer: the identity");
        let none = ex(&[7, 8], "pp");
        assert!(pair_positions(&s, &none).is_empty());
    }

    #[test]
    fn batches_point_at_the_teachers_flat_positions() {
        let items = vec![
            (ex(&[1, 2, 3, 4], "ppss"), ex(&[5, 6, 7], "pss")),
            (ex(&[1, 2, 3], "pps"), ex(&[5, 6, 7, 8, 9], "pppss")),
        ];
        let batches = make_paired_batches(&items, 2, 8, (0, 0), &Device::Cpu).unwrap();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.teacher_ids.dims2().unwrap(), (2, 5));
        // Row 0: student targets at 1, 2 ↔ teacher targets at 0, 1. Row 1: student target at 1
        // ↔ the teacher's first, at 2 (flat 5 + 2).
        assert_eq!(b.teacher_pos.to_vec2::<u32>().unwrap(), vec![vec![0, 0, 1, 0], vec![0, 7, 0, 0]]);
        assert_eq!(b.paired.to_vec2::<f32>().unwrap(), vec![vec![0.0, 1.0, 1.0, 0.0], vec![0.0, 1.0, 0.0, 0.0]]);
        assert_eq!(b.n_pairs, 3);
        let alone = make_batches(&[items[0].0.clone(), items[1].0.clone()], 2, 8, false, 0, &Device::Cpu).unwrap();
        assert_eq!(b.student.ids.to_vec2::<u32>().unwrap(), alone[0].ids.to_vec2::<u32>().unwrap());
    }
}
