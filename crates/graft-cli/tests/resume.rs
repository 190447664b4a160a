//! Exact resume after a hard kill: `graft train` is killed with SIGKILL right after its first
//! checkpoint, resumed with `--resume`, and must end with adapter weights bit-identical to an
//! uninterrupted run.

mod common;

use common::{graft, lora_config};
use std::path::Path;
use std::time::{Duration, Instant};

fn write_config(dir: &Path, name: &str) -> std::path::PathBuf {
    lora_config(
        dir,
        name,
        "max_steps = 6\nbatch_size = 2\ngrad_accum = 2\nlr = 1e-3\nwarmup_steps = 2\nsave_every = 2\neval_batches = 1",
    )
}

fn adapter(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let t = candle_core::safetensors::load(dir.join("adapter/adapter_model.safetensors"), &candle_core::Device::Cpu)
        .unwrap();
    let mut v: Vec<(String, Vec<f32>)> =
        t.into_iter().map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn killed_run_resumes_to_bit_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    let full = write_config(dir.path(), "full");
    let status = graft(&["train", full.to_str().unwrap()]).status().unwrap();
    assert!(status.success());

    let cut = write_config(dir.path(), "cut");
    let mut child = graft(&["train", cut.to_str().unwrap()]).spawn().unwrap();
    let first = dir.path().join("cut/checkpoints/step-00000002/manifest.json");
    let start = Instant::now();
    while !first.exists() {
        assert!(start.elapsed() < Duration::from_secs(600), "no checkpoint appeared");
        if let Some(s) = child.try_wait().unwrap() {
            panic!("run ended before it could be killed: {s}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!dir.path().join("cut/adapter").exists(), "the killed run must not have finished");

    // A second run into the same directory without --resume would start over; --resume continues.
    let status = graft(&["train", cut.to_str().unwrap(), "--resume"]).status().unwrap();
    assert!(status.success());
    let (a, b) = (adapter(&dir.path().join("full")), adapter(&dir.path().join("cut")));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits()), "{na} differs after resume");
    }
    let ma = std::fs::read_to_string(dir.path().join("full/metrics.jsonl")).unwrap();
    let mb = std::fs::read_to_string(dir.path().join("cut/metrics.jsonl")).unwrap();
    let loss = |m: &str| -> Vec<String> {
        m.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].to_string()).collect()
    };
    let (la, lb) = (loss(&ma), loss(&mb));
    assert_eq!(la.len(), 6);
    // Warm-up as in transformers: the first update uses lr 0, the second 1/2 of the peak (2 steps).
    let lrs: Vec<f64> =
        ma.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["lr"].as_f64().unwrap()).collect();
    assert_eq!(&lrs[..3], &[0.0, 5e-4, 1e-3]);
    assert_eq!(lb, la, "loss curve after resume");
}
