//! Progressive columns over a real CNN's own units: the EfficientNet-Lite0 checkpoint with its
//! top two units (seventh stage, head convolution) copied per task, on real digits (MNIST-5k at
//! 32 x 32; task `low` tells 0, 1 and 2 apart, task `high` 3, 4 and 5). The first task's logits
//! are bit-identical after the second is learned and the shared base is untouched; a new
//! column's lateral adapters start silent (`U = 0`) yet get gradients; the loss falls; save /
//! load keeps every task's logits bit for bit; bad settings and unknown tasks are refused by name.

use candle_core::{DType, Device, Tensor};
use graft::features::progressive::{fit_cnn_column, CnnColumnObjective, CnnColumnsConfig, ProgressiveCnn};
use graft::features::RunOutput;
use graft::models::efficientnet::EfficientNetLite;
use graft::train::Objective;
use graft::vision::classifier::ImageInput;
use graft::vision::preprocess::Preprocess;
use graft::vision::Image;
use std::sync::OnceLock;

fn base() -> &'static EfficientNetLite {
    static MODEL: OnceLock<EfficientNetLite> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = graft::assets::ensure("efficientnet-lite0", false).expect("efficientnet-lite0");
        EfficientNetLite::load(&path, &Device::Cpu, DType::F32).unwrap()
    })
}

/// `per_class` digits of each of `classes` (labelled 0, 1, ... in that order), skipping the
/// first `skip` of each.
fn digits(classes: [usize; 3], per_class: usize, skip: usize) -> (Vec<Image>, Vec<usize>) {
    static SET: OnceLock<graft::vision::ImageSet> = OnceLock::new();
    let set = SET.get_or_init(|| graft::vision::mnist_csv::mnist_5k(false).expect("mnist-5k"));
    let mut out = (Vec::new(), Vec::new());
    for (y, class) in classes.into_iter().enumerate() {
        let of_class = set.images.iter().zip(&set.labels).filter(|(_, &l)| l == class).skip(skip).take(per_class);
        for (img, _) in of_class {
            out.0.push(img.clone());
            out.1.push(y);
        }
    }
    out
}

fn input() -> ImageInput {
    ImageInput { preprocess: Preprocess { resize: 32, crop: 32, ..Preprocess::imagenet(32) }, augment: None, batch: 16 }
}

fn cfg() -> CnnColumnsConfig {
    CnnColumnsConfig { top_units: 2, lateral_rank: 8, epochs: 3, batch_size: 12, ..CnnColumnsConfig::default() }
}

fn quiet<'a>(on_event: &'a mut dyn FnMut(graft::train::Event)) -> RunOutput<'a> {
    RunOutput { dir: None, on_event }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

fn maps(net: &ProgressiveCnn, images: &[Image]) -> Tensor {
    net.bottom_maps(&images.iter().collect::<Vec<_>>(), &input()).unwrap()
}

fn names(l: &[&str]) -> Vec<String> {
    l.iter().map(|s| s.to_string()).collect()
}

#[test]
fn cnn_columns_learn_and_never_change_earlier_tasks() {
    let cfg = cfg();
    let mut net = ProgressiveCnn::new(base().clone(), cfg.top_units).unwrap();
    let base_top = bits(
        &Tensor::cat(
            &base().top_unit_tensors(2).unwrap().iter().map(|(_, t)| t.flatten_all().unwrap()).collect::<Vec<_>>(),
            0,
        )
        .unwrap(),
    );
    let (low, low_y) = digits([0, 1, 2], 16, 0);
    let (high, high_y) = digits([3, 4, 5], 16, 0);
    let (test, _) = digits([0, 1, 2], 4, 16);
    let (low_maps, high_maps, test_maps) = (maps(&net, &low), maps(&net, &high), maps(&net, &test));
    // The shared units end at the sixth stage: 192 channels at 1/32 of 32 pixels.
    assert_eq!(low_maps.dims(), [48, 192, 1, 1]);

    let losses =
        fit_cnn_column(&mut net, "low", &names(&["0", "1", "2"]), &low_maps, &low_y, &cfg, quiet(&mut |_| {})).unwrap();
    assert_eq!(losses.len(), 3);
    assert!(losses[2].loss < losses[0].loss, "low loss {losses:?}");
    let low_logits = bits(&net.logits("low", &test_maps, 5).unwrap());

    let losses =
        fit_cnn_column(&mut net, "high", &names(&["3", "4", "5"]), &high_maps, &high_y, &cfg, quiet(&mut |_| {}))
            .unwrap();
    assert!(losses[2].loss < losses[0].loss, "high loss {losses:?}");
    assert_eq!(bits(&net.logits("low", &test_maps, 7).unwrap()), low_logits, "low after high");
    assert_eq!(net.logits("high", &test_maps, 5).unwrap().dims(), [12, 3]);
    assert_eq!(net.predict("high", &test_maps, 8).unwrap().len(), 12);
    // The base is what it was: columns train copies of its units.
    let after = base().top_unit_tensors(2).unwrap();
    let after = Tensor::cat(&after.iter().map(|(_, t)| t.flatten_all().unwrap()).collect::<Vec<_>>(), 0).unwrap();
    assert_eq!(bits(&after), base_top);

    // Units: stage 7 (192 -> 1152 -> 320, depthwise 3x3) and the head convolution (320 -> 1280),
    // each convolution with its batch norm's scale and shift; head 1280 * 3 + 3; the second
    // column's laterals: into its head convolution (320 wide) and into its head (1280 wide).
    let units = (192 * 1152 + 2 * 1152) + (1152 * 9 + 2 * 1152) + (1152 * 320 + 2 * 320) + (320 * 1280 + 2 * 1280);
    assert_eq!(net.column_params(0).unwrap(), units + 1280 * 3 + 3);
    assert_eq!(net.column_params(1).unwrap(), units + 1280 * 3 + 3 + 2 * 8 * 320 + 2 * 8 * 1280);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("columns.safetensors");
    net.save(&path).unwrap();
    let back = ProgressiveCnn::load(&path, base().clone()).unwrap();
    assert_eq!(bits(&back.logits("low", &test_maps, 8).unwrap()), low_logits);
    assert_eq!(bits(&back.logits("high", &test_maps, 8).unwrap()), bits(&net.logits("high", &test_maps, 8).unwrap()));
    assert_eq!(back.description(), net.description());
    assert_eq!(back.trainable_params().unwrap(), net.trainable_params().unwrap());

    let err = net.logits("letters", &test_maps, 8).unwrap_err().to_string();
    assert!(err.contains("unknown task `letters`: the network's tasks are low, high"), "{err}");
    let err = fit_cnn_column(&mut net, "high", &names(&["a", "b", "c"]), &high_maps, &high_y, &cfg, quiet(&mut |_| {}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("task `high` has a column already"), "{err}");
    let wide = CnnColumnsConfig { top_units: 3, ..cfg.clone() };
    let err =
        fit_cnn_column(&mut net, "other", &names(&["a", "b", "c"]), &high_maps, &high_y, &wide, quiet(&mut |_| {}))
            .unwrap_err();
    assert!(err.to_string().contains("differs from the network's 2"), "{err}");
    let text = std::fs::read(&path).unwrap();
    std::fs::write(&path, &text[..text.len() - 64]).unwrap();
    assert!(ProgressiveCnn::load(&path, base().clone()).is_err(), "a cut file is refused");
}

#[test]
fn a_new_cnn_column_starts_silent_but_its_laterals_get_gradients() {
    let cfg = cfg();
    let mut net = ProgressiveCnn::new(base().clone(), cfg.top_units).unwrap();
    let (low, low_y) = digits([0, 1, 2], 8, 0);
    let low_maps = maps(&net, &low);
    fit_cnn_column(&mut net, "low", &names(&["0", "1", "2"]), &low_maps, &low_y, &cfg, quiet(&mut |_| {})).unwrap();
    let (high, high_y) = digits([3, 4, 5], 8, 0);
    let obj =
        CnnColumnObjective::new(&net, "high", &names(&["3", "4", "5"]), &maps(&net, &high), &high_y, &cfg, 11).unwrap();
    let loss = obj.loss(&(0..12).collect(), 0).unwrap();
    let grads = loss.loss.sum.backward().unwrap();
    let groups = obj.param_groups();
    let norm = |name: &str| {
        let (_, v) = groups.iter().flat_map(|g| &g.vars).find(|(n, _)| n == name).unwrap();
        grads.get(v.as_tensor()).map_or(0.0, |g| g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap())
    };
    // U = 0: an adapter adds nothing yet, so V's gradient is exactly zero while U's is not, on the
    // maps (level 1, into the head convolution) and on the pooled vectors (level 2, the head).
    for level in [1, 2] {
        assert!(norm(&format!("columns.1.lateral.{level}.0.u")) > 0.0, "U of level {level} gets a gradient");
        assert_eq!(norm(&format!("columns.1.lateral.{level}.0.v")), 0.0, "V of level {level} passes through U = 0");
    }
    assert!(norm("columns.1.head.weight") > 0.0);
    assert!(norm("columns.1.unit._conv_head.weight") > 0.0, "the copied head convolution trains");
    assert!(norm("columns.1.unit._blocks.15._project_conv.weight") > 0.0, "the copied seventh stage trains");
    assert_eq!(groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["units", "head"]);
    assert!(groups.iter().flat_map(|g| &g.vars).all(|(n, _)| n.starts_with("columns.1.")), "nothing of column 0");

    // The shared part's output for other column depths: the sixth stage's input for three
    // units, the images themselves when the columns copy every unit.
    let three = ProgressiveCnn::new(base().clone(), 3).unwrap();
    assert_eq!(maps(&three, &high[..2]).dims(), [2, 112, 2, 2]);
    let all = ProgressiveCnn::new(base().clone(), 9).unwrap();
    assert_eq!(maps(&all, &high[..2]).dims(), [2, 3, 32, 32]);
    for bad in [0, 10] {
        let err = ProgressiveCnn::new(base().clone(), bad).unwrap_err().to_string();
        assert!(err.contains("cnn_columns.top_units must be between 1 and EfficientNet-Lite0's 9 units"), "{err}");
    }
}
