//! Training operations with hand-written backward passes.
//!
//! candle's generic autograd pays for things fine-tuning never needs: a matmul's backward also
//! computes the gradient of a frozen weight (and allocates a zero tensor to add it to), composed
//! RMSNorm / RoPE / softmax keep every intermediate alive until backward, constants such as masks
//! and RoPE tables receive gradients, and a causal-LM loss materialises `[tokens × vocab]` logits
//! plus their softmax and gradient. Each op here computes its forward with candle's fused kernels
//! (or storage-level matmul), records one graph node, and returns exactly the gradients that are
//! needed. Every backward is checked against finite differences in `tests/custom_ops.rs`.
//!
//! All ops work on any candle device: forward values come from device-generic tensor ops or
//! backend storage calls, and backward passes are tensor ops. The CNN ops (depthwise
//! convolution, training-mode batch norm, ReLU6) and BERT's (LayerNorm, GELU) also have CPU loops for `f32` / `f64` that
//! replace several passes over memory with one; each is tested against its tensor form.

mod adamw;
mod attach;
mod attention;
mod batch_norm;
mod bf16_gemm;
mod channel_affine;
mod checkpoint;
mod cpu;
mod depthwise_conv;
mod depthwise_cpu;
mod exp_cpu;
mod frozen_linear;
mod gelu;
mod gemv_cpu;
mod grad_reverse;
mod head_slices;
mod kd_loss;
mod kd_sparse;
mod layer_norm;
mod lm_head_loss;
mod lora_linear;
mod pointwise_conv;
mod precision;
mod q4_1_matmul;
mod q4_1_tile;
mod relu6;
mod rms_norm;
mod rope;
mod swiglu;
#[cfg(test)]
mod test_support;
mod uld;

pub use adamw::{adamw_in_place, AdamWUpdate};
pub use attention::{attention, CausalMask};
pub use batch_norm::{batch_norm_train, BatchStats};
pub use channel_affine::{channel_affine, channel_sum};
pub use checkpoint::{batch_slice, checkpoint, within_batch_slice, CheckpointMode, GradSink};
pub use depthwise_conv::depthwise_conv2d;
pub use frozen_linear::{frozen_linear, FrozenWeight};
pub use gelu::gelu_erf;
pub use gemv_cpu::gemv;
pub use grad_reverse::grad_reverse;
pub use head_slices::head_logits;
pub use kd_loss::{divergence, lm_head_kd, lm_head_kd_masked, Divergence, KdRows, KdSpec};
pub use kd_sparse::{lm_head_kd_sparse, teacher_top_k, SparseTeacher};
pub use layer_norm::layer_norm;
pub use lm_head_loss::{lm_head_nll, LM_HEAD_CHUNK};
pub use lora_linear::{lora_linear, lora_linear_dropout, InputDropout};
pub use pointwise_conv::pointwise_conv;
pub use precision::{matmul_precision, trained_linear, with_matmul_precision, MatmulPrecision};
pub(crate) use precision::{mixed_matmul, mixed_matmul_add};
pub use q4_1_matmul::{q4_1_dequantize, q4_1_kernel_name, q4_1_many_rows, q4_1_matmul, q4_1_rows_kernel_name};
pub use relu6::relu6;
pub use rms_norm::rms_norm;
pub use rope::rope;
pub use swiglu::silu_mul;
