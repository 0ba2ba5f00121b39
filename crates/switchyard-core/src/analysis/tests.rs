use super::*;
use crate::job::{ChatRequest, Job};

/// An analyzer for `catalog` with the built-in need model and the default target.
pub(crate) fn analyzer_for(catalog: &Catalog) -> TaskAnalyzer {
    TaskAnalyzer::new(
        catalog,
        NeedModel::builtin().unwrap(),
        DEFAULT_QUALITY_TARGET,
    )
}

/// The shipped catalog (`pipelines/models.toml`).
pub(crate) fn shipped_catalog() -> Catalog {
    Catalog::parse(
        std::path::Path::new("models.toml"),
        include_str!("../../../../pipelines/models.toml"),
    )
    .unwrap()
}

/// An analyzer for the shipped catalog.
pub(crate) fn analyzer() -> TaskAnalyzer {
    analyzer_for(&shipped_catalog())
}

pub(crate) fn job(prompt: &str, max_tokens: Option<u32>) -> Job {
    Job::new(
        "t",
        "a/b/c/d",
        ChatRequest {
            max_tokens,
            ..ChatRequest::from_user(prompt)
        },
    )
}

fn category(prompt: &str) -> TaskCategory {
    analyzer().analyze(&job(prompt, None), false).category
}

#[test]
fn obvious_requests_land_in_their_category() {
    assert_eq!(
        category(
            "Classify the sentiment of this review as positive or negative: the blender broke in a week."
        ),
        TaskCategory::Classification
    );
    assert_eq!(
        category(
            "Extract the invoice number, date and total as JSON from: Invoice #4471, 2026-03-02, total $1,204.00"
        ),
        TaskCategory::Extraction
    );
    assert_eq!(
        category("Summarize the following meeting notes in three bullet points: ..."),
        TaskCategory::Summarization
    );
    assert_eq!(
        category("Write a Python function that deduplicates a list while keeping order."),
        TaskCategory::Code
    );
    assert_eq!(
        category("What is 17% of 2,340? Round to the nearest cent."),
        TaskCategory::Math
    );
    assert_eq!(
        category("Write a haiku about autumn rain on a warehouse roof."),
        TaskCategory::Creative
    );
    assert_eq!(
        category(
            "Should we expand to Ohio given a 12% margin and a two-year payback? Weigh the trade-offs."
        ),
        TaskCategory::Reasoning
    );
    assert_eq!(
        category("Hi! I can't log into my account since yesterday, can you help?"),
        TaskCategory::Chat
    );
}

#[test]
fn hard_cues_raise_complexity() {
    let a = analyzer();
    let easy = a.analyze(
        &job(
            "Classify this ticket as billing or technical. One word.",
            Some(8),
        ),
        false,
    );
    let hard = a.analyze(&job("Design a lock-free concurrent queue in Rust, prove it is linearizable, and discuss the memory model edge cases.", Some(4000)), false);
    assert!(easy.complexity < 0.2, "{}", easy.complexity);
    assert!(hard.complexity > 0.7, "{}", hard.complexity);
    assert!(hard.required_quality > easy.required_quality);
}

#[test]
fn explanations_list_the_features_that_fired() {
    let a = analyzer().analyze(&job("Please summarize this transcript.", None), true);
    let names: Vec<&str> = a.features.iter().map(|f| f.name).collect();
    assert!(names.contains(&"summar*"), "{names:?}");
    assert!(
        analyzer()
            .analyze(&job("Please summarize this transcript.", None), false)
            .features
            .is_empty()
    );
}

#[test]
fn output_estimates_respect_max_tokens() {
    let a = analyzer().analyze(
        &job("Write a long story about a lighthouse keeper.", Some(100)),
        false,
    );
    assert!(a.expected_output_tokens <= 100);
    let b = analyzer().analyze(
        &job("Classify: spam or not? 'WIN A FREE CRUISE'", None),
        false,
    );
    assert!(b.expected_output_tokens < 20);
}

#[test]
fn words_match_on_boundaries_only() {
    // "this" contains "hi", "summary" is not "sum of".
    let a = analyzer().analyze(&job("this", None), true);
    assert!(
        a.features.iter().all(|f| f.name != "hi"),
        "{:?}",
        a.features
    );
}

/// Four bytes per token undercounts scripts outside ASCII; the ceiling that
/// decides when to count exactly does not, and equals the estimate for ASCII.
#[test]
fn the_token_ceiling_does_not_undercount_non_latin_scripts() {
    let samples = [
        "请把下面的客户投诉分类为账单、技术或账户问题，并简要说明理由。我上个月被重复扣费两次，客服一直没有回复我的邮件。",
        "次の顧客の問い合わせを請求、技術、アカウントのいずれかに分類し、理由を簡潔に説明してください。先月二重に請求されました。",
        "다음 고객 문의를 청구, 기술, 계정 중 하나로 분류하고 이유를 간단히 설명하십시오. 지난달에 두 번 청구되었습니다.",
        "निम्नलिखित ग्राहक शिकायत को बिलिंग, तकनीकी या खाता समस्या में वर्गीकृत करें और संक्षेप में कारण बताएं।",
    ];
    let mut undercounted = 0;
    for text in samples {
        let j = job(&text.repeat(20), None);
        let a = analyzer().analyze(&j, false);
        for t in [
            crate::catalog::Tokenizer::Cl100kBase,
            crate::catalog::Tokenizer::O200kBase,
        ] {
            let exact = crate::tokens::count_job(&j, t).unwrap();
            assert!(
                a.prompt_tokens_ceiling >= exact,
                "{t:?}: {} < {exact} for {text}",
                a.prompt_tokens_ceiling
            );
            undercounted += usize::from(a.prompt_tokens < exact);
        }
    }
    assert!(
        undercounted >= 3,
        "the byte estimate alone undercounts these scripts"
    );
    let english = analyzer().analyze(
        &job("Classify this ticket as billing or technical.", None),
        false,
    );
    assert_eq!(english.prompt_tokens_ceiling, english.prompt_tokens);
}
