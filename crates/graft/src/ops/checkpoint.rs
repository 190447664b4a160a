//! Gradient checkpointing: keep a block's input, not its activations, and recompute the block
//! during backward.
//!
//! The forward runs the block outside the graph and records one node over its input. Its
//! backward rebuilds the block's graph from the saved input, back-propagates the incoming
//! gradient through it, returns the input's gradient, and leaves the gradients of the block's
//! parameters in a [`GradSink`]: a custom op can only return gradients for its inputs, and the
//! parameters are not inputs of the node. The trainer drains the sink after backward (see
//! `train::step`).

use super::attach::{attach1, attach2};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, TensorId, Var};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What a checkpointed training pass keeps for backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointMode {
    /// Each block's input; backward recomputes one block at a time with its whole graph.
    #[default]
    Blocks,
    /// The input of every few blocks (a segment); backward recomputes a segment keeping only the
    /// inputs of its blocks' halves (attention, MLP), then each half with its graph, one
    /// sequence of the batch at a time. Least memory: about one more forward per step than
    /// `Blocks`, and products over one sequence's rows.
    Nested,
}

impl CheckpointMode {
    /// Parses `blocks` or `nested` (the CLI's spelling, as in configs).
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "blocks" => Ok(CheckpointMode::Blocks),
            "nested" => Ok(CheckpointMode::Nested),
            other => Err(format!("unknown checkpoint mode `{other}`: use blocks or nested")),
        }
    }
}

/// Gradients of parameters computed inside checkpointed backward passes, summed per tensor.
#[derive(Debug, Default)]
pub struct GradSink {
    grads: Mutex<HashMap<TensorId, Tensor>>,
}

impl GradSink {
    fn add(&self, id: TensorId, grad: Tensor) -> candle_core::Result<()> {
        let mut map = self.grads.lock().map_err(|_| candle_core::Error::Msg("gradient sink poisoned".into()))?;
        let sum = match map.remove(&id) {
            Some(prev) => (prev + grad)?,
            None => grad,
        };
        map.insert(id, sum);
        Ok(())
    }

    /// Moves every collected gradient into `store`, adding to what is already there.
    pub fn drain_into(&self, store: &mut GradStore) -> candle_core::Result<()> {
        let drained: Vec<(TensorId, Tensor)> =
            self.grads.lock().map_err(|_| candle_core::Error::Msg("gradient sink poisoned".into()))?.drain().collect();
        for (id, g) in drained {
            let sum = match store.get_id(id) {
                Some(prev) => (prev + g)?,
                None => g,
            };
            store.insert_id(id, sum);
        }
        Ok(())
    }
}

thread_local! {
    static BATCH_SLICE: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

/// Runs `f` as the computation of sequence `slice = (index, of)` of a batch of `of` sequences
/// that a pass runs one sequence at a time (`None`: the whole batch). Whatever draws random
/// values per element (LoRA dropout) reads it through [`batch_slice`] and draws the values the
/// whole batch would have drawn at that sequence's place, so splitting changes no result.
pub fn within_batch_slice<R>(slice: Option<(usize, usize)>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<(usize, usize)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            BATCH_SLICE.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(BATCH_SLICE.with(|s| s.replace(slice)));
    f()
}

/// The sequence of the batch the running computation covers, `(index, of)`, inside
/// [`within_batch_slice`]; `None` for a whole batch.
pub fn batch_slice() -> Option<(usize, usize)> {
    BATCH_SLICE.with(Cell::get)
}

/// `f(x)` recorded as one checkpointed node: `x` gets its gradient through the graph, each of
/// `params` (the tensors `f` trains) gets its gradient in `sink`.
pub fn checkpoint<F>(x: &Tensor, params: Vec<Tensor>, sink: Arc<GradSink>, f: F) -> candle_core::Result<Tensor>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync + 'static,
{
    if !x.track_op() && params.is_empty() {
        return f(x);
    }
    let anchor = params.first().cloned();
    let value = f(&x.detach())?.detach();
    let backward = move |x: &Tensor, g: &Tensor| -> candle_core::Result<Option<Tensor>> {
        let input = Var::from_tensor(x)?;
        let y = f(input.as_tensor())?;
        let grads = (y * g.to_dtype(x.dtype())?)?.sum_all()?.backward()?;
        for p in &params {
            if let Some(gp) = grads.get(p) {
                sink.add(p.id(), gp.clone())?;
            }
        }
        Ok(grads.get(input.as_tensor()).cloned())
    };
    match anchor {
        // The first block's input (embeddings of a frozen table) is not tracked: a parameter
        // joins the node as a second input so that backward reaches it. Its gradient still goes
        // through the sink, with every other parameter's.
        Some(p) if !x.track_op() => {
            attach2("checkpoint", x, &p, value, Box::new(move |x, _, _, g| Ok((backward(x, g)?, None))))
        }
        _ => attach1("checkpoint", x, value, Box::new(move |x, _, g| backward(x, g))),
    }
}
