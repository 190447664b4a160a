//! `graft selftest` on the CPU: the comparison finds no difference where there is none, finds
//! the bf16 rounding where there is, and fails when the limits are too strict for it. Also the
//! error a CPU-only build gives for `--device cuda`.

use serde_json::Value;
use std::process::{Command, Output};

fn graft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_graft")).args(args).output().expect("run graft")
}

/// Runs a tiny-shape selftest on the CPU and returns its exit success and JSON report.
fn selftest(extra: &[&str]) -> (bool, Value) {
    let mut args = vec![
        "selftest",
        "--device",
        "cpu",
        "--shape",
        "tiny",
        "--seq",
        "12",
        "--batch",
        "2",
        "--train-steps",
        "3",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = graft(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("stdout is not one JSON object ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    (out.status.success(), report)
}

fn checks(report: &Value) -> Vec<Value> {
    report["runs"].as_array().unwrap().iter().flat_map(|r| r["checks"].as_array().unwrap().clone()).collect()
}

fn rel(checks: &[Value], name: &str) -> f64 {
    checks.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no check {name}"))["rel"].as_f64().unwrap()
}

#[test]
fn cpu_against_cpu_in_f32_is_exact() {
    let (ok, report) = selftest(&["--dtypes", "f32"]);
    assert!(ok, "{report}");
    assert_eq!(report["pass"], true);
    let cs = checks(&report);
    let names: Vec<&str> = cs.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["logits", "loss", "lora_grads", "train_losses"]);
    for c in &cs {
        assert_eq!(c["rel"].as_f64(), Some(0.0), "same device, same dtype, same seed: {c}");
        assert!(c["scale"].as_f64().unwrap() > 0.0, "the compared values are not all zero: {c}");
        assert!(c["count"].as_u64().unwrap() > 0);
    }
    // 2 layers x 7 projections x (A, B).
    let grads = cs.iter().find(|c| c["name"] == "lora_grads").unwrap();
    assert_eq!(grads["detail"]["tensors"], 28);
    // The training curve moves: the compared losses are of a run that learns.
    let curve = cs.iter().find(|c| c["name"] == "train_losses").unwrap();
    let losses: Vec<f64> = curve["detail"]["losses"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(losses.len(), 3);
    assert!(losses[2] < losses[0], "loss should fall on a repeated batch: {losses:?}");
}

#[test]
fn bf16_against_f32_differs_within_the_loose_limits_and_fails_the_tight_ones() {
    let (ok, report) = selftest(&["--dtypes", "bf16", "--reference-dtype", "f32"]);
    assert!(ok, "{report}");
    let run = &report["runs"][0];
    assert_eq!(
        (run["dtype"].as_str(), run["reference_dtype"].as_str(), run["tolerance"].as_str()),
        (Some("bf16"), Some("f32"), Some("loose"))
    );
    let cs = checks(&report);
    for name in ["logits", "loss", "lora_grads", "train_losses"] {
        let r = rel(&cs, name);
        // bf16 keeps 8 mantissa bits: the rounding shows everywhere, clearly so in the logits
        // and the gradients (about 3e-3 and 2e-2 on these shapes).
        let floor = if matches!(name, "logits" | "lora_grads") { 1e-4 } else { 0.0 };
        assert!(r > floor && r.is_finite(), "{name}: rel {r} should show bf16 rounding");
        let limit = cs.iter().find(|c| c["name"] == name).unwrap()["limit"].as_f64().unwrap();
        assert!(r <= limit, "{name}: rel {r} above the loose limit {limit}");
    }

    // The same comparison under the f32 limits must be reported as a failure.
    let (ok, report) = selftest(&["--dtypes", "bf16", "--reference-dtype", "f32", "--tolerance", "tight"]);
    assert!(!ok, "tight limits must reject bf16 rounding: {report}");
    assert_eq!(report["pass"], false);
    assert!(checks(&report).iter().any(|c| c["pass"] == false));
}

#[test]
fn cuda_device_names_explain_a_cpu_only_build() {
    if cfg!(feature = "cuda") {
        return;
    }
    let out = graft(&["selftest", "--device", "cuda:1", "--shape", "tiny"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`cuda` feature") && err.contains("docs/gpu.md"), "{err}");
    let out = graft(&["bench", "forward", "--random-init", "--device", "cuda", "--wait-idle", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`cuda` feature"));
    let out = graft(&["selftest", "--device", "gpu0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown device `gpu0`"));
}
