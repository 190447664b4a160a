//! Choosing where tensors live and in which precision.
//!
//! Every core path takes a candle [`Device`] and [`DType`]; this module turns user-facing names
//! (`cpu`, `cuda`, `cuda:1`, `f32`, `bf16`, ...) into those values.

use crate::{GraftError, Result};
use candle_core::{DType, Device};

/// Parses a device name: `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
///
/// A CUDA name fails with an explanation when this build has no `cuda` feature, or when the
/// device cannot be opened (no driver, no such ordinal, CUDA libraries not on the library path).
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => open_cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(ordinal)) => open_cuda(ordinal),
            _ => Err(GraftError::Input(format!("unknown device `{other}`: use `cpu`, `cuda` or `cuda:N`"))),
        },
    }
}

/// Whether this build can run on CUDA devices (the `cuda` cargo feature).
pub const fn cuda_built() -> bool {
    cfg!(feature = "cuda")
}

/// Opens CUDA device `ordinal`.
fn open_cuda(ordinal: usize) -> Result<Device> {
    if !cuda_built() {
        return Err(GraftError::Input(format!(
            "device `cuda:{ordinal}` needs graft built with the `cuda` feature \
             (`cargo build --release --features cuda`, see docs/gpu.md); this build runs on `cpu` only"
        )));
    }
    Device::new_cuda(ordinal).map_err(|e| {
        GraftError::Input(format!(
            "could not open CUDA device {ordinal}: {e}; check that `nvidia-smi` lists it and that \
             LD_LIBRARY_PATH holds the CUDA 13 libraries (docs/gpu.md)"
        ))
    })
}

/// A short name of `device` for reports: `cpu` or `cuda:N`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Parses a dtype name: `f32`, `f64`, `bf16` or `f16`.
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name {
        "f32" => Ok(DType::F32),
        "f64" => Ok(DType::F64),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(GraftError::Input(format!("unknown dtype `{other}`: use f32, f64, bf16 or f16"))),
    }
}

/// Number of threads candle's CPU kernels use (what benchmarks report).
pub fn cpu_threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// Stack of each CPU worker thread: the whole command runs on one (deep autograd graphs recurse),
/// so it gets more than a spawned thread's default; only touched pages cost memory.
const WORKER_STACK_BYTES: usize = 64 << 20;

/// The environment variable that sets how long candle's element-wise workers spin before they
/// sleep ([`BARRIER_SPIN_LIMIT`]).
pub const BARRIER_SPIN_LIMIT_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// Spin rounds of candle's element-wise workers between two pieces of work before they sleep,
/// unless the environment sets [`BARRIER_SPIN_LIMIT_VAR`] (candle's own default is 25,000).
///
/// candle runs element-wise ops on its own workers, beside the pool that runs the matrix
/// products and graft's kernels. A worker that has finished its share spins while the next
/// product needs every core: on 2 cores, a LoRA step measured faster with workers that sleep
/// almost at once (docs/benchmarks.md, "Threads").
pub const BARRIER_SPIN_LIMIT: u32 = 100;

/// Fixes the CPU thread count for the whole process (`threads`, else `RAYON_NUM_THREADS`, else
/// every core) and runs `f` on a worker of one pool of that many threads; candle's element-wise
/// workers sleep soon after their work ([`BARRIER_SPIN_LIMIT`]).
///
/// candle, the `gemm` crate and graft's own kernels all split work over rayon's current pool,
/// and candle takes its count from `RAYON_NUM_THREADS` (without it, it re-reads `/proc/cpuinfo`
/// on every dense matmul: measured 12.9 → 17.4 tokens/s of decoding). Running `f` inside the
/// pool, rather than on the caller's thread, leaves exactly `threads` threads busy: a caller
/// outside the pool is one more, and on a machine with as many cores as workers it competes with
/// them. Call once at start-up, before any other thread exists (it sets an environment variable).
pub fn run_with_cpu_threads<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> Result<R> {
    let from_env = std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0);
    let n = match threads.or(from_env) {
        Some(0) => return Err(GraftError::Input("the thread count must be at least 1".into())),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    if std::env::var_os(BARRIER_SPIN_LIMIT_VAR).is_none() {
        std::env::set_var(BARRIER_SPIN_LIMIT_VAR, BARRIER_SPIN_LIMIT.to_string());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .stack_size(WORKER_STACK_BYTES)
        .thread_name(|i| format!("graft-cpu-{i}"))
        .build()
        .map_err(|e| GraftError::Input(format!("cannot start {n} CPU threads: {e}")))?;
    Ok(pool.install(f))
}

/// Makes the C allocator keep freed blocks for reuse instead of handing them back to the
/// operating system.
///
/// Training allocates and frees the same activation-sized buffers (hundreds of KB to tens of
/// MB) every step. glibc serves such blocks with fresh `mmap` pages and unmaps them on free, so
/// each step pays a page fault and a page clear for memory it had just released: measured on a
/// LoRA step of SmolLM2-135M at 256×4 tokens, 4.7 M faults and 20 s of system time for two
/// steps, 16.6 s per step; with this setting 1.1 M faults, 4.9 s and 11.9 s per step, at the
/// same peak RSS. Process-wide; call it once at start-up. Does nothing on other C libraries.
///
/// It also keeps one allocation arena for all threads. The work runs on a thread-pool worker
/// ([`run_with_cpu_threads`]), and glibc gives every thread but the main one arenas of 64 MB
/// heaps that fragment: the same LoRA step measured 152 tokens/s at 3,135 MB peak RSS with
/// per-thread arenas, 199 tokens/s at 2,841 MB with one.
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; every value is in range.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
