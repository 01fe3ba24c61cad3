//! Personal fields sealed in the stored event (docs/DATA-PROTECTION.md, "The encrypted
//! field"). Which fields are personal and whose key seals them is
//! `schemas::EventType::personal`; this module moves them into one sealed object per event
//! on the way in and back out on the way out.
//!
//! A sealed payload keeps the event's form (externally tagged by its type) with its
//! personal fields taken out and one field added:
//! `"sealed": {"key": "<subject>", "generation": <n>, "box": "<base64 of nonce ‖
//! ChaCha20-Poly1305 of the fields as a JSON object>"}`, bound to the event's identity
//! (aggregate type and id, sequence, event type) as associated data, so a box cannot be
//! moved to another event. Opening puts the fields back; when the key is erased each
//! field reads as its blank (`"[erased]"`, `{}`, `[]`) and the event says it was erased.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use schemas::personal::{ERASED, Personal, Pseudonym, SealedBy};
use schemas::{EventType, Subject};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::keys::{DataKeys, KeyError, SubjectKey};

/// The field a sealed payload keeps its sealed personal fields in.
pub const SEALED: &str = "sealed";

/// The sealed object in a stored payload (the contract's type: Kafka records carry it
/// too).
pub use schemas::SealedBox;

#[derive(Debug, thiserror::Error)]
pub enum ProtectError {
    #[error("keys: {0}")]
    Keys(#[from] KeyError),
    /// A stored payload that is not what this module writes: a defect or tampering.
    #[error("{0}")]
    Malformed(String),
    #[error("the sealed fields do not open with their key: {0}")]
    Sealing(#[from] sealing::SealError),
}

/// What opening found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Nothing was sealed (no personal fields, or stored before sealing was on).
    Plain,
    /// What was stored otherwise is back in clear: sealed fields, or people named by
    /// their pseudonyms.
    Opened,
    /// The key is erased: the personal fields read as their blanks.
    Erased,
}

/// Which event a payload is: what its box is bound to (associated data), and whose keys
/// seal it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventAt<'a> {
    pub tenant: &'a str,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
}

impl EventAt<'_> {
    /// What its box is bound to: the event's identity.
    pub fn associated(&self) -> Vec<u8> {
        format!(
            "{}\0{}\0{}\0{}",
            self.aggregate_type, self.aggregate_id, self.sequence, self.event_type
        )
        .into_bytes()
    }
}

fn inner<'a>(
    payload: &'a mut Value,
    event_type: &str,
) -> Result<&'a mut Map<String, Value>, ProtectError> {
    payload
        .get_mut(event_type)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ProtectError::Malformed(format!("the payload is not a {event_type}")))
}

/// Whose key seals this event's personal fields (and who owns that key when it is
/// created), or `None` when it has none.
pub fn sealing_subject(
    event_type: &str,
    payload: &Value,
) -> Result<Option<(Personal, Subject, Option<Subject>)>, ProtectError> {
    let Some(personal) = EventType::parse(event_type).and_then(EventType::personal) else {
        return Ok(None);
    };
    let inner = payload.get(event_type).and_then(Value::as_object);
    let subject = match personal.sealed_by {
        SealedBy::Tenant => Subject::Tenant,
        SealedBy::Conversation => {
            let id = inner
                .and_then(|i| i.get("conversation_id"))
                .and_then(Value::as_str)
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| {
                    ProtectError::Malformed(format!("{event_type} names no conversation_id"))
                })?;
            Subject::Conversation(id)
        }
    };
    // The person who started a conversation owns its key.
    let owner = (event_type == EventType::ConversationStarted.as_str())
        .then(|| {
            inner
                .and_then(|i| i.get("started_by"))
                .and_then(Value::as_str)
        })
        .flatten()
        .and_then(|sub| Subject::parse(&format!("user:{sub}")).ok());
    Ok(Some((personal, subject, owner)))
}

/// Moves `personal`'s fields of `payload` into a box sealed with `key` for `subject`.
pub fn seal(
    payload: &mut Value,
    event_type: &str,
    personal: Personal,
    subject: &Subject,
    key: &SubjectKey,
    associated: &[u8],
) -> Result<(), ProtectError> {
    let inner = inner(payload, event_type)?;
    if inner.contains_key(SEALED) {
        return Err(ProtectError::Malformed(format!(
            "{event_type} is sealed already"
        )));
    }
    let mut fields = Map::new();
    for (name, _) in personal.fields {
        if let Some(value) = inner.remove(*name) {
            fields.insert((*name).to_owned(), value);
        }
    }
    let clear = serde_json::to_vec(&fields)
        .map_err(|e| ProtectError::Malformed(format!("the fields do not serialise: {e}")))?;
    let sealed = key.key.seal(&clear, associated)?;
    let sealed_box = SealedBox {
        key: subject.to_string(),
        generation: key.generation,
        sealed: STANDARD.encode(sealed),
    };
    let sealed_box = serde_json::to_value(sealed_box)
        .map_err(|e| ProtectError::Malformed(format!("the box does not serialise: {e}")))?;
    inner.insert(SEALED.to_owned(), sealed_box);
    Ok(())
}

/// The box of a stored payload, if it has one.
pub fn sealed_box(payload: &Value, event_type: &str) -> Result<Option<SealedBox>, ProtectError> {
    let Some(found) = payload.get(event_type).and_then(|inner| inner.get(SEALED)) else {
        return Ok(None);
    };
    SealedBox::deserialize(found)
        .map(Some)
        .map_err(|e| ProtectError::Malformed(format!("a malformed sealed box: {e}")))
}

/// The form a stored payload is published in (docs/DATA-PROTECTION.md, "Kafka"): its box
/// stays, and each personal field it took out carries its placeholder (`[sealed]`, `{}`,
/// `[]`), so the record fits the contract's schema. Whether it is sealed.
pub fn for_publishing(payload: &mut Value, event_type: &str) -> Result<bool, ProtectError> {
    if sealed_box(payload, event_type)?.is_none() {
        return Ok(false);
    }
    let personal = EventType::parse(event_type)
        .and_then(EventType::personal)
        .ok_or_else(|| ProtectError::Malformed(format!("{event_type} has nothing to seal")))?;
    let inner = inner(payload, event_type)?;
    for (name, blank) in personal.fields {
        inner.insert((*name).to_owned(), blank.placeholder());
    }
    Ok(true)
}

/// Puts the sealed fields of `payload` back in clear with `key`, or their blanks when
/// `key` is `None` (erased).
pub fn open(
    payload: &mut Value,
    event_type: &str,
    key: Option<&sealing::Key>,
    associated: &[u8],
) -> Result<Opened, ProtectError> {
    let Some(sealed_box) = sealed_box(payload, event_type)? else {
        return Ok(Opened::Plain);
    };
    let personal = EventType::parse(event_type)
        .and_then(EventType::personal)
        .ok_or_else(|| ProtectError::Malformed(format!("{event_type} has nothing to seal")))?;
    let inner = inner(payload, event_type)?;
    inner.remove(SEALED);
    let Some(key) = key else {
        for (name, blank) in personal.fields {
            inner.insert((*name).to_owned(), blank.value());
        }
        return Ok(Opened::Erased);
    };
    let bytes = STANDARD
        .decode(&sealed_box.sealed)
        .map_err(|_| ProtectError::Malformed("a sealed box that is not base64".into()))?;
    let clear = key.open(&bytes, associated)?;
    let fields: Map<String, Value> = serde_json::from_slice(&clear)
        .map_err(|e| ProtectError::Malformed(format!("sealed fields that are not JSON: {e}")))?;
    for (name, value) in fields {
        inner.insert(name, value);
    }
    Ok(Opened::Opened)
}

/// Sealing and opening with the process's keys: what the store's writers and its one
/// reader call.
#[derive(Debug)]
pub struct Protector {
    keys: DataKeys,
}

impl AsRef<DataKeys> for Protector {
    fn as_ref(&self) -> &DataKeys {
        &self.keys
    }
}

impl Protector {
    pub fn new(keys: DataKeys) -> Self {
        Protector { keys }
    }

    pub fn keys(&self) -> &DataKeys {
        &self.keys
    }

    /// Seals the personal fields of the event `at` in place, and names the people who
    /// acted in its payload (`EventType::actors`) by their pseudonyms.
    pub async fn seal(&self, at: &EventAt<'_>, payload: &mut Value) -> Result<(), ProtectError> {
        self.rename_actors(at, payload, Naming::Pseudonyms).await?;
        let Some((personal, subject, owner)) = sealing_subject(at.event_type, payload)? else {
            return Ok(());
        };
        let key = self
            .keys
            .for_writing(at.tenant, &subject, owner.as_ref())
            .await?;
        seal(
            payload,
            at.event_type,
            personal,
            &subject,
            &key,
            &at.associated(),
        )
    }

    /// Opens the stored event `at` in place.
    pub async fn open(
        &self,
        at: &EventAt<'_>,
        payload: &mut Value,
    ) -> Result<Opened, ProtectError> {
        let renamed = self.rename_actors(at, payload, Naming::Actors).await?;
        let Some(sealed_box) = sealed_box(payload, at.event_type)? else {
            return Ok(if renamed {
                Opened::Opened
            } else {
                Opened::Plain
            });
        };
        let subject =
            Subject::parse(&sealed_box.key).map_err(|e| ProtectError::Malformed(e.to_string()))?;
        let key = self
            .keys
            .for_reading(at.tenant, &subject, sealed_box.generation)
            .await?;
        open(payload, at.event_type, key.as_ref(), &at.associated())
    }

    /// The text `actor` (who acted) of `tenant` is stored as: their pseudonym, created on
    /// first use. A pseudonym, an empty id and an erased one are stored as they are.
    pub async fn pseudonym(&self, tenant: &str, actor: &str) -> Result<String, ProtectError> {
        if actor.is_empty() || actor == ERASED || Pseudonym::parse(actor).is_some() {
            return Ok(actor.to_owned());
        }
        Ok(self.keys.pseudonym(tenant, actor).await?.to_string())
    }

    /// Who the stored `actor` of `tenant` names: a pseudonym reads as the person's id
    /// (`[erased]` once they are erased); anything else was stored in clear.
    pub async fn actor(&self, tenant: &str, stored: &str) -> Result<String, ProtectError> {
        let Some(pseudonym) = Pseudonym::parse(stored) else {
            return Ok(stored.to_owned());
        };
        Ok(self
            .keys
            .actor(tenant, pseudonym)
            .await?
            .unwrap_or_else(|| ERASED.to_owned()))
    }

    /// Replaces each field of `payload` naming who acted by its pseudonym, or back;
    /// whether any changed.
    async fn rename_actors(
        &self,
        at: &EventAt<'_>,
        payload: &mut Value,
        naming: Naming,
    ) -> Result<bool, ProtectError> {
        let Some(kind) = EventType::parse(at.event_type) else {
            return Ok(false);
        };
        let mut renamed = false;
        for field in kind.actors() {
            let Some(Value::String(stored)) = inner(payload, at.event_type)?.get(*field) else {
                continue;
            };
            let stored = stored.clone();
            let named = match naming {
                Naming::Pseudonyms => self.pseudonym(at.tenant, &stored).await?,
                Naming::Actors => self.actor(at.tenant, &stored).await?,
            };
            if named != stored {
                inner(payload, at.event_type)?.insert((*field).to_owned(), Value::String(named));
                renamed = true;
            }
        }
        Ok(renamed)
    }
}

/// Which way [`Protector::rename_actors`] goes.
#[derive(Debug, Clone, Copy)]
enum Naming {
    Pseudonyms,
    Actors,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(conversation: &str) -> Value {
        json!({"MessageSent": {
            "conversation_id": conversation,
            "message_id": "7b1d3c1e-0000-4000-8000-000000000001",
            "role": "user",
            "content": "my phone number is 555-0100",
            "sources": [{"kind": "knowledge", "id": "7b1d3c1e-0000-4000-8000-000000000002", "title": "Price list", "score": 0.5}],
            "sent_at": 1_700_000_000_000_i64
        }})
    }

    #[test]
    fn sealed_fields_leave_the_payload_open_back_and_read_as_blanks_when_erased() {
        let conversation = "0b7a4b8e-0000-4000-8000-000000000001";
        let original = message(conversation);
        let (personal, subject, owner) = sealing_subject("MessageSent", &original)
            .expect("a rule")
            .expect("personal fields");
        assert_eq!(subject.to_string(), format!("conversation:{conversation}"));
        assert_eq!(owner, None, "only the start names the owner");
        let key = SubjectKey {
            generation: 3,
            key: sealing::Key::generate().expect("randomness"),
        };
        let at = |sequence| EventAt {
            tenant: "acme",
            aggregate_type: "conversation",
            aggregate_id: conversation,
            sequence,
            event_type: "MessageSent",
        };
        let ad = at(4).associated();
        let mut stored = original.clone();
        seal(&mut stored, "MessageSent", personal, &subject, &key, &ad).expect("seals");
        let text = stored.to_string();
        assert!(
            !text.contains("555-0100") && !text.contains("Price list"),
            "{text}"
        );
        assert_eq!(
            stored["MessageSent"]["role"], "user",
            "the rest stays readable"
        );
        assert_eq!(stored["MessageSent"]["sealed"]["generation"], 3);

        let mut opened = stored.clone();
        let done = open(&mut opened, "MessageSent", Some(&key.key), &ad).expect("opens");
        assert_eq!((done, &opened), (Opened::Opened, &original));

        // Moved to another event, it does not open.
        let elsewhere = at(5).associated();
        assert!(
            open(
                &mut stored.clone(),
                "MessageSent",
                Some(&key.key),
                &elsewhere
            )
            .is_err()
        );

        let mut erased = stored.clone();
        let done = open(&mut erased, "MessageSent", None, &ad).expect("reads");
        assert_eq!(done, Opened::Erased);
        assert_eq!(erased["MessageSent"]["content"], "[erased]");
        assert_eq!(erased["MessageSent"]["sources"], json!([]));
        assert!(erased["MessageSent"].get("sealed").is_none());
        let event: schemas::Event = serde_json::from_value(erased).expect("reads as the contract");
        assert_eq!(event.event_type(), EventType::MessageSent);

        let mut plain = original.clone();
        assert_eq!(
            open(&mut plain, "MessageSent", None, &ad).expect("reads"),
            Opened::Plain
        );
        assert_eq!(plain, original);
    }

    #[test]
    fn a_conversation_start_names_its_owner_and_knowledge_is_the_tenants() {
        let started = json!({"ConversationStarted": {
            "conversation_id": "0b7a4b8e-0000-4000-8000-000000000001",
            "tenant_id": "acme", "title": "t", "metadata": {}, "started_at": 1,
            "started_by": "ann"
        }});
        let (_, _, owner) = sealing_subject("ConversationStarted", &started)
            .expect("a rule")
            .expect("personal fields");
        assert_eq!(owner, Some(Subject::User("ann".into())));
        let added = json!({"KnowledgeDocumentAdded": {"knowledge_id": "x", "title": "t"}});
        let (_, subject, _) = sealing_subject("KnowledgeDocumentAdded", &added)
            .expect("a rule")
            .expect("personal fields");
        assert_eq!(subject, Subject::Tenant);
        let endpoint = json!({"WebhookEndpointDeleted": {"endpoint_id": "x"}});
        assert!(
            sealing_subject("WebhookEndpointDeleted", &endpoint)
                .expect("a rule")
                .is_none()
        );
        let nameless = json!({"MessageSent": {"content": "hi"}});
        assert!(sealing_subject("MessageSent", &nameless).is_err());
    }
}
