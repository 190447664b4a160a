//! Chat templates: parity with transformers' `apply_chat_template` on the default model's GGUF
//! template (tests/golden/chat_template.jsonl, byte-identical), role checks (RELIABILITY D4),
//! content as data (D5) and hostile templates (D6).

mod common;

use graft::io::gguf::GgufFile;
use graft::tokenizer::{ChatTemplate, Message, Tokenizer, TokenizerError};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, Instant};

fn gguf_template() -> ChatTemplate {
    let tok = Tokenizer::from_gguf(&GgufFile::open(common::default_gguf()).unwrap()).unwrap();
    tok.chat_template().expect("the default model has a chat template")
}

fn template(src: &str) -> ChatTemplate {
    ChatTemplate::new(src.to_string(), Some("<s>".into()), Some("</s>".into())).with_name("test-template")
}

fn template_error(result: Result<String, TokenizerError>) -> String {
    match result {
        Err(e @ TokenizerError::Template { .. }) => e.to_string(),
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn golden_conversations_render_byte_identical() {
    let t = gguf_template();
    let facts = common::golden_json("model_facts.json");
    assert_eq!(t.source(), facts["chat_template"].as_str().unwrap());
    assert_eq!(hex::encode(Sha256::digest(t.source().as_bytes())), facts["chat_template_sha256"].as_str().unwrap());
    let cases = common::golden_jsonl("chat_template.jsonl");
    assert_eq!(cases.len(), 5);
    for case in cases {
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let gen = case["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(t.render(&messages, gen).unwrap(), case["rendered"].as_str().unwrap(), "{messages:?}");
    }
}

#[test]
fn unknown_role_is_an_error_naming_index_and_role() {
    let t = gguf_template();
    let err = t.render(&[Message::user("hi"), Message::new("tool", "{}")], true).unwrap_err();
    assert!(matches!(&err, TokenizerError::Role { index: 1, role } if role == "tool"), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("message 1") && msg.contains("`tool`"), "{msg}");
    let err = t.render(&[Message::user("hi"), Message::system("late")], true).unwrap_err();
    assert!(matches!(err, TokenizerError::Role { index: 1, .. }), "{err:?}");
}

#[test]
fn consecutive_turns_of_one_role_are_kept() {
    let out = gguf_template().render(&[Message::user("a"), Message::user("b")], false).unwrap();
    assert!(out.ends_with("<|im_start|>user\na<|im_end|>\n<|im_start|>user\nb<|im_end|>\n"), "{out}");
}

#[test]
fn content_is_data_not_jinja() {
    let content = "{{ 7 * 7 }}{% if true %}yes{% endif %}{# c #}{{ raise_exception('boom') }}";
    let out = gguf_template().render(&[Message::system("s"), Message::user(content)], false).unwrap();
    assert_eq!(out, format!("<|im_start|>system\ns<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n"));
}

#[test]
fn raise_exception_is_a_template_error() {
    let t = template("{% if messages[0].role != 'system' %}{{ raise_exception('system first please') }}{% endif %}");
    let msg = template_error(t.render(&[Message::user("hi")], false));
    assert!(msg.contains("test-template") && msg.contains("system first please"), "{msg}");
}

#[test]
fn syntax_and_undefined_errors_name_the_template() {
    let msg = template_error(template("{% for m in messages %}{{ m.content }").render(&[], false));
    assert!(msg.contains("test-template"), "{msg}");
    let msg = template_error(template("{{ no_such_thing.field }}").render(&[], false));
    assert!(msg.contains("test-template") && msg.contains("undefined"), "{msg}");
    assert!(template("{% if %}").check().is_err());
    assert!(gguf_template().check().is_ok());
}

#[test]
fn huge_range_fails_fast() {
    let start = Instant::now();
    let msg = template_error(template("{% for i in range(10**9) %}x{% endfor %}").render(&[], false));
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
    assert!(msg.contains("test-template"), "{msg}");
}

#[test]
fn runaway_loops_run_out_of_fuel_fast() {
    let start = Instant::now();
    let src = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    let msg = template_error(template(src).render(&[Message::user("hi")], false));
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
    assert!(msg.contains("fuel"), "{msg}");
}

#[test]
fn huge_output_is_capped() {
    let start = Instant::now();
    let chunk = "x".repeat(1000);
    let src = format!("{{% for i in range(50000) %}}{chunk}{{% endfor %}}");
    let msg = template_error(template(&src).render(&[], false));
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
    assert!(msg.contains("exceeds"), "{msg}");
}

#[test]
fn python_string_methods_and_loop_controls_work() {
    let src = "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}\
               {{ m.content.strip().upper() }}{% if m.content.startswith(' a') %}!{% endif %};{% endfor %}";
    let msgs = [Message::user(" ab "), Message::assistant("c"), Message::user("d")];
    assert_eq!(template(src).render(&msgs, false).unwrap(), "AB!;C;");
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// `chat_template` in tokenizer_config.json may be a list of named templates.
#[test]
fn named_templates_in_tokenizer_config() {
    let tok = Tokenizer::from_gguf(&GgufFile::open(common::default_gguf()).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    tok.save_hf(dir.path()).unwrap();
    let config = |templates: serde_json::Value| {
        serde_json::json!({ "eos_token": "<|im_end|>", "bos_token": {"content": "<|im_start|>"}, "chat_template": templates })
            .to_string()
    };
    write(
        dir.path(),
        "tokenizer_config.json",
        &config(serde_json::json!([
            {"name": "tool_use", "template": "T"},
            {"name": "default", "template": "{{ bos_token }}D{{ eos_token }}"}
        ])),
    );
    let t = Tokenizer::from_hf_folder(dir.path()).unwrap();
    assert_eq!(t.eos_id(), Some(2));
    assert_eq!(t.chat_template().unwrap().render(&[], false).unwrap(), "<|im_start|>D<|im_end|>");

    write(
        dir.path(),
        "tokenizer_config.json",
        &config(serde_json::json!([{"name": "a", "template": "A"}, {"name": "b", "template": "B"}])),
    );
    let err = Tokenizer::from_hf_folder(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer_config.json") && err.contains("default"), "{err}");

    write(dir.path(), "tokenizer_config.json", &config(serde_json::Value::Null));
    assert!(Tokenizer::from_hf_folder(dir.path()).unwrap().chat_template().is_none());
    write(dir.path(), "chat_template.jinja", "J{{ messages | length }}");
    let t = Tokenizer::from_hf_folder(dir.path()).unwrap().chat_template().unwrap();
    assert_eq!(t.render(&[Message::user("x")], false).unwrap(), "J1");
}
