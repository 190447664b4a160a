//! Label scoring continues a shared prompt prefix from one cache and reads logits at each
//! right-padded prompt's last position: it must give what a separate forward per prompt gives.

use candle_core::{DType, Tensor};
use graft::models::llama::LoadOptions;
use graft::models::Model;

#[test]
fn prefix_cached_batched_logits_equal_one_forward_per_prompt() {
    let source = graft::assets::resolve_model(graft::assets::DEFAULT_MODEL, false).expect("default model");
    let model = graft::models::load::load_causal_lm(&source, &LoadOptions::default()).unwrap();
    let tok = graft::tokenizer::Tokenizer::from_source(&source).unwrap();
    let prefix = "Is the sentiment of this tweet negative, neutral or positive?\n\n";
    let texts = ["I love this!", "Worst service ever, never again.", "ok", "The meeting moved to 3pm on Friday."];
    let prompts: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode_plain(&format!("{prefix}{t}")).unwrap()).collect();
    let common = prompts.iter().map(Vec::len).min().unwrap();
    assert!(prompts.iter().all(|p| p[..5] == prompts[0][..5]), "the prompts should share a prefix");
    let labels: Vec<u32> =
        ["negative", "neutral", "positive"].iter().map(|l| tok.encode_plain(l).unwrap()[0]).collect();

    // Reference: each prompt alone, full logits, last position.
    let mut expected = Vec::new();
    let mut reference_rows = Vec::new();
    for p in &prompts {
        let ids = Tensor::from_vec(p.clone(), (1, p.len()), model.device()).unwrap();
        let logits = model.forward_infer(&ids, &mut model.new_cache()).unwrap().to_dtype(DType::F32).unwrap();
        let last: Vec<f32> = logits.get(0).unwrap().get(p.len() - 1).unwrap().to_vec1().unwrap();
        let best =
            (0..labels.len()).max_by(|&a, &b| last[labels[a] as usize].total_cmp(&last[labels[b] as usize])).unwrap();
        expected.push(best);
        reference_rows.push(last);
    }
    let got = graft::eval::classification::score_labels(&model, &prompts, &labels, tok.eos_id().unwrap(), 3).unwrap();
    assert_eq!(got, expected);

    // The logits themselves, through a shared prefix cache and right padding.
    let keep = common - 1;
    let prefix_ids = Tensor::from_vec(prompts[0][..keep].to_vec(), (1, keep), model.device()).unwrap();
    let mut cache = model.new_cache();
    model.forward_infer_last(&prefix_ids, &mut cache).unwrap();
    let width = prompts.iter().map(|p| p.len() - keep).max().unwrap();
    let flat: Vec<u32> = prompts
        .iter()
        .flat_map(|p| {
            let mut row = p[keep..].to_vec();
            row.resize(width, 0);
            row
        })
        .collect();
    let ids = Tensor::from_vec(flat, (prompts.len(), width), model.device()).unwrap();
    let positions: Vec<usize> = prompts.iter().map(|p| p.len() - keep - 1).collect();
    let mut batch_cache = cache.repeat_batch(prompts.len()).unwrap();
    let logits = model.logits_at(&ids, &positions, &mut batch_cache).unwrap().to_dtype(DType::F32).unwrap();
    for (i, reference) in reference_rows.iter().enumerate() {
        let row: Vec<f32> = logits.get(i).unwrap().to_vec1().unwrap();
        let worst = row.iter().zip(reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 2e-3, "prompt {i}: logits differ by {worst}");
    }
}

/// A k-shot prompt renders through the chat template as earlier turns: the zero-shot prompt's
/// question comes last, each shot is a user turn answered by its label, and with the same shots
/// every question shares the whole shot block as a prefix (so scoring runs it once).
#[test]
fn k_shot_prompts_render_shots_as_chat_turns() {
    use graft::prompting::{PromptTemplate, Shot};
    let source = graft::assets::resolve_model(graft::assets::DEFAULT_MODEL, false).expect("default model");
    let tok = graft::tokenizer::Tokenizer::from_source(&source).unwrap();
    let template = PromptTemplate::default();
    let shots = [
        Shot { text: "Loving the new update!".into(), label: "positive".into() },
        Shot { text: "Flight delayed again.".into(), label: "negative".into() },
    ];
    let render = |shots: &[Shot], text: &str| {
        let ids = graft::data::prompt_ids(&tok, &template.messages(shots, text)).unwrap();
        tok.decode(&ids, false).unwrap()
    };
    let zero = render(&[], "ok then");
    let two = render(&shots, "ok then");
    assert!(two.ends_with(zero.split("<|im_start|>user").last().unwrap()), "{two}");
    assert_eq!(two.matches("<|im_start|>assistant\npositive<|im_end|>").count(), 1, "{two}");
    assert_eq!(two.matches("<|im_start|>assistant\nnegative<|im_end|>").count(), 1, "{two}");
    assert_eq!(two.matches("<|im_start|>user").count(), 3, "{two}");
    assert!(two.trim_end().ends_with("<|im_start|>assistant"), "{two}");
    let other = render(&shots, "something else entirely");
    let shared = two.chars().zip(other.chars()).take_while(|(a, b)| a == b).count();
    assert!(shared > two.find("Flight delayed again.").unwrap(), "the shot block should be a shared prefix");
}

/// `graft eval classify` reads a chat file's held-out answers as gold labels and renders each
/// prompt as training does: its predictions are those of the tweet prompt scored directly, and
/// an answer outside the given labels is an error naming its line.
#[test]
fn classify_eval_of_a_chat_file_matches_prompt_scoring() {
    use graft::datasets::tweets::LABELS;
    use graft::prompting::PromptTemplate;
    use graft::recipes::classify_eval::{classify, read_classify_data};

    let source = graft::assets::resolve_model(graft::assets::DEFAULT_MODEL, false).expect("default model");
    let model = graft::models::load::load_causal_lm(&source, &LoadOptions::default()).unwrap();
    let tok = graft::tokenizer::Tokenizer::from_source(&source).unwrap();
    let template = PromptTemplate::default();
    let rows = [
        ("I love this airline, best crew ever!", "positive"),
        ("Flight delayed four hours and nobody tells us anything.", "negative"),
        ("The flight to Denver leaves at 9.", "neutral"),
        ("Lost my bag again. Great job.", "negative"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("test.jsonl");
    let lines: Vec<String> = rows
        .iter()
        .map(|(text, label)| {
            let user = template.instruction.replace("{text}", text);
            serde_json::json!({"messages": [
                {"role": "system", "content": template.system},
                {"role": "user", "content": user},
                {"role": "assistant", "content": format!(" {label}\n")},
            ]})
            .to_string()
        })
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();

    let data = read_classify_data(&file, graft::data::DataFormat::Messages, &tok, &[], None).unwrap();
    assert_eq!(data.labels, LABELS.to_vec(), "the distinct answers, trimmed and sorted");
    assert_eq!(data.gold, vec![2, 0, 1, 0]);
    let got = classify(&model, &tok, &data).unwrap();
    let texts: Vec<String> = rows.iter().map(|(t, _)| t.to_string()).collect();
    let want = graft::prompting::classify(&model, &tok, &template, &[], &texts, &LABELS).unwrap();
    assert_eq!(got.pred, want);
    let correct = got.pred.iter().zip(&data.gold).filter(|(p, g)| p == g).count();
    assert_eq!(got.report.accuracy, correct as f64 / 4.0);

    let limited = read_classify_data(&file, graft::data::DataFormat::Messages, &tok, &[], Some(2)).unwrap();
    assert_eq!((limited.labels.len(), limited.gold.len()), (2, 2));
    let two = ["negative".to_string(), "positive".to_string()];
    let err = read_classify_data(&file, graft::data::DataFormat::Messages, &tok, &two, None).unwrap_err().to_string();
    assert!(err.contains("test.jsonl:3") && err.contains("`neutral`"), "{err}");
}
