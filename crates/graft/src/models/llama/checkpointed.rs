//! The decoder's training pass under gradient checkpointing: runs of blocks recorded as
//! checkpointed nodes ([`ops::checkpoint`]), one block per node ([`CheckpointMode::Blocks`]), or
//! segments of blocks whose attention and MLP halves are checkpointed nodes of their own inside
//! the segment ([`CheckpointMode::Nested`]). A segment's backward recomputes its blocks keeping
//! only the halves' inputs, then each half's backward recomputes that half with its graph. Inside
//! a nested segment each sequence of the batch runs on its own, so what lives at once is the
//! segments' inputs, one segment's half inputs and one half's graph for one sequence.

use super::block::{Block, BlockContext, Earlier};
use super::model::Pass;
use super::virtual_tokens::VirtualTokens;
use crate::ops::{self, CheckpointMode, GradSink};
use crate::Result;
use candle_core::Tensor;
use std::sync::Arc;

/// A block, a half of one or a segment of blocks, as the function a checkpointed node recomputes.
type StageFn = Arc<dyn Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync>;

/// Blocks per segment when `n` blocks are checkpointed in `mode`: 1 for `Blocks`; for `Nested`
/// about √(n/2), where the segment inputs kept (n / s) and one segment's half inputs (2s)
/// are fewest together (30 blocks: segments of 4, 8 + 8 inputs instead of 30).
pub(super) fn segment_len(n: usize, mode: CheckpointMode) -> usize {
    match mode {
        CheckpointMode::Blocks => 1,
        CheckpointMode::Nested => ((n as f64 / 2.0).sqrt().round() as usize).max(1),
    }
}

/// What every checkpointed node of one pass shares.
pub(super) struct CheckpointedRun<'a> {
    /// Hyperparameters and RoPE tables of the blocks.
    pub ctx: &'a BlockContext,
    /// Positions before the tokens (virtual tokens).
    pub offset: usize,
    /// Trained prefix keys and values, when prefix tuning runs through the blocks.
    pub prefix: Option<VirtualTokens>,
    /// Where the nodes leave their parameters' gradients.
    pub sink: &'a Arc<GradSink>,
    /// One node per block, or segments with checkpointed halves.
    pub mode: CheckpointMode,
}

fn msg(e: crate::GraftError) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

impl CheckpointedRun<'_> {
    /// Runs `blocks` (the first being layer `first`) over `x` as one checkpointed node.
    pub(super) fn segment(&self, blocks: &[Block], first: usize, x: &Tensor) -> Result<Tensor> {
        let halves = self.mode == CheckpointMode::Nested;
        let stages: Vec<StageFn> =
            blocks.iter().enumerate().map(|(j, blk)| self.block_fn(blk, first + j, halves)).collect();
        let mut params: Vec<Tensor> = blocks.iter().flat_map(Block::trainable_tensors).collect();
        params.extend(self.prefix_params());
        let run = move |x: &Tensor| -> candle_core::Result<Tensor> {
            let mut x = x.clone();
            for stage in &stages {
                x = stage(&x)?;
            }
            Ok(x)
        };
        // With checkpointed halves each sequence runs on its own: a half's backward then holds
        // one sequence's graph, and the sequences meet again only at the segment's end.
        let f = move |x: &Tensor| -> candle_core::Result<Tensor> {
            let b = x.dim(0)?;
            if !halves || b == 1 {
                return run(x);
            }
            let outs = (0..b)
                .map(|i| ops::within_batch_slice(Some((i, b)), || run(&x.narrow(0, i, 1)?)))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&outs, 0)
        };
        Ok(ops::checkpoint(x, params, self.sink.clone(), f)?)
    }

    /// The prefix's trained tensors (their gradients come out of the blocks' attention).
    fn prefix_params(&self) -> Vec<Tensor> {
        self.prefix.iter().map(|p| p.tensor().clone()).filter(|t| t.is_variable()).collect()
    }

    /// Block `blk` (layer `layer`) as a function; with `halves`, its attention and MLP halves
    /// are each a checkpointed node of their own.
    fn block_fn(&self, blk: &Block, layer: usize, halves: bool) -> StageFn {
        let (ctx, block, pre) = (self.ctx.clone(), blk.clone(), self.prefix.clone());
        let offset = self.offset;
        let attend: StageFn = Arc::new(move |x: &Tensor| {
            let kv = match &pre {
                Some(p) => p.prefix_kv(layer, x.dim(0)?, &ctx.cfg, x.dtype()).map_err(msg)?,
                None => None,
            };
            let earlier = Earlier { offset, cache: None, prefix: kv.as_ref() };
            ctx.attend(&block, layer, x, earlier, Pass::Train).map_err(msg)
        });
        let (ctx, block) = (self.ctx.clone(), blk.clone());
        let feed: StageFn = Arc::new(move |x: &Tensor| ctx.feed_forward(&block, x, Pass::Train).map_err(msg));
        if !halves {
            return Arc::new(move |x: &Tensor| feed(&attend(x)?));
        }
        let mut params = blk.trainable_tensors();
        params.extend(self.prefix_params());
        let sink = self.sink.clone();
        Arc::new(move |x: &Tensor| {
            // A half's backward recomputes it later, outside this sequence's scope: it keeps the
            // sequence it covers.
            let slice = ops::batch_slice();
            let a = attend.clone();
            let half = move |x: &Tensor| ops::within_batch_slice(slice, || a(x));
            let mid = ops::checkpoint(x, params.clone(), sink.clone(), half)?;
            let f = feed.clone();
            let half = move |x: &Tensor| ops::within_batch_slice(slice, || f(x));
            ops::checkpoint(&mid, params.clone(), sink.clone(), half)
        })
    }
}
