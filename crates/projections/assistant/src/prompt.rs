//! The prompt of a reply: the versioned template, the retrieved context, the history
//! that fits the token budget, the question. Pure: no I/O.

use llm::{ChatMessage, ChatRequest, ContextItem, approximate_tokens};
use schemas::Role;

/// The reply prompt's template and its version (recorded nowhere yet but here: a change
/// of wording is a new file and a new version).
pub const REPLY_TEMPLATE: &str = include_str!("../prompts/reply-v1.md");
pub const REPLY_TEMPLATE_VERSION: &str = "reply-v1";

/// A message of the conversation, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Said {
    pub role: Role,
    pub content: String,
}

/// The request for the reply to `question`, given what came before it (oldest first)
/// and what retrieval found (best first). The newest history that fits
/// `history_tokens` is kept, whole messages only.
pub fn reply_request(
    question: &str,
    history: &[Said],
    context: Vec<ContextItem>,
    history_tokens: u32,
) -> ChatRequest {
    let rendered = if context.is_empty() {
        "(nothing relevant was found)".to_owned()
    } else {
        context
            .iter()
            .enumerate()
            .map(|(i, c)| format!("[{}] {}: {}", i + 1, c.title, c.text))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut messages = vec![ChatMessage::system(
        REPLY_TEMPLATE.replace("{context}", &rendered),
    )];
    let mut budget = history_tokens;
    let mut kept = Vec::new();
    for said in history.iter().rev() {
        let cost = approximate_tokens(&said.content);
        if cost > budget {
            break;
        }
        budget -= cost;
        kept.push(match said.role {
            Role::User => ChatMessage::user(said.content.clone()),
            Role::Assistant => ChatMessage::assistant(said.content.clone()),
            Role::System => ChatMessage::system(said.content.clone()),
        });
    }
    messages.extend(kept.into_iter().rev());
    messages.push(ChatMessage::user(question));
    ChatRequest {
        messages,
        max_tokens: None,
        temperature: None,
        context,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn said(role: Role, content: &str) -> Said {
        Said {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn the_prompt_holds_the_context_the_newest_history_that_fits_and_the_question() {
        let history = [
            said(Role::User, "one two three four five six"),
            said(Role::Assistant, "seven eight"),
            said(Role::User, "nine ten"),
        ];
        let context = vec![ContextItem {
            source_id: Uuid::nil(),
            title: "Plan".into(),
            text: "Launch is planned for May.".into(),
            score: 0.8,
        }];
        let req = reply_request("when do we ship?", &history, context, 5);
        let system = &req.messages[0].content;
        assert!(
            system.contains("[1] Plan: Launch is planned for May."),
            "{system}"
        );
        assert!(!system.contains("{context}"));
        // 5 tokens: the two newest messages (2 + 2), not the oldest (6).
        let rest: Vec<_> = req.messages[1..]
            .iter()
            .map(|m| m.content.as_str())
            .collect();
        assert_eq!(rest, ["seven eight", "nine ten", "when do we ship?"]);
        assert_eq!(req.context.len(), 1);
    }

    #[test]
    fn without_context_the_prompt_says_nothing_was_found() {
        let req = reply_request("hello?", &[], Vec::new(), 100);
        assert!(
            req.messages[0]
                .content
                .contains("(nothing relevant was found)")
        );
        assert_eq!(req.messages.len(), 2);
    }
}
