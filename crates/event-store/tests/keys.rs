//! Crypto-shredding's keys (`event_store::keys`) against a real PostgreSQL: created once
//! per subject however many writers ask at once, stored only sealed, read back through a
//! rotated master key, and erased for good (per subject, per tenant), with a new
//! generation for what is written afterwards.

use event_store::keys::{DataKeys, Erased};
use schemas::Subject;
use sealing::Keyring;

/// Whether `keys` open `subject`'s key of `generation` (an erased or never created key
/// does not).
async fn readable(keys: &DataKeys, tenant: &str, subject: &Subject, generation: i32) -> bool {
    keys.for_reading(tenant, subject, generation)
        .await
        .expect("read")
        .is_some()
}

fn master() -> String {
    Keyring::generate_text().expect("randomness")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_keys_are_created_once_sealed_rotatable_and_erased_for_good() {
    let db = testkit::env::database().await;
    event_store::migrate(&db.pool).await.expect("migrate");
    let old = master();
    let keys = std::sync::Arc::new(DataKeys::new(
        db.pool.clone(),
        Keyring::from_text(&old).expect("a key"),
    ));
    let alice = Subject::User("alice".into());
    let bob = Subject::User("bob".into());

    // Eight writers ask for alice's key at once: one key, generation 1.
    let mut asked = Vec::new();
    for _ in 0..8 {
        let (keys, alice) = (keys.clone(), alice.clone());
        asked.push(tokio::spawn(async move {
            keys.for_writing("acme", &alice, None).await.expect("a key")
        }));
    }
    let mut ids = Vec::new();
    for one in asked {
        let key = one.await.expect("the task");
        assert_eq!(key.generation, 1);
        ids.push(key.key.id().to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one key for one subject");
    let alice_key = keys
        .for_writing("acme", &alice, None)
        .await
        .expect("a key")
        .key;
    let sealed = alice_key.seal(b"hello", b"event").expect("seals");

    // Nothing of the key is stored in clear.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT sealed_key FROM subject_keys UNION ALL SELECT sealed_key FROM tenant_keys",
    )
    .fetch_all(&db.pool)
    .await
    .expect("the key rows");
    for row in &stored {
        assert!(
            !row.windows(32).any(|w| w == alice_key.expose()),
            "a key is stored in clear"
        );
    }

    // Another process with the master key rotated (a new one first, the old one still
    // configured) reads the same key.
    let rotated = DataKeys::new(
        db.pool.clone(),
        Keyring::from_text(&format!("{},{old}", master())).expect("keys"),
    );
    let read = rotated
        .for_reading("acme", &alice, 1)
        .await
        .expect("read")
        .expect("not erased");
    assert_eq!(read.open(&sealed, b"event").expect("opens"), b"hello");
    // Without the master key that sealed it, a stored key does not open: an error, not
    // erased data.
    let stranger = DataKeys::new(
        db.pool.clone(),
        Keyring::from_text(&master()).expect("a key"),
    );
    assert!(stranger.for_reading("acme", &alice, 1).await.is_err());
    // A key never created reads as none.
    assert!(!readable(&keys, "acme", &bob, 1).await);

    // Erasing alice: her key is gone here at once and everywhere after the cache's TTL
    // (a process that never read it sees it gone now); bob's is untouched.
    let bob_key = keys.for_writing("acme", &bob, None).await.expect("a key");
    // A conversation alice started: its key is hers, and goes with her.
    let hers = Subject::Conversation(uuid::Uuid::new_v4());
    keys.for_writing("acme", &hers, Some(&alice))
        .await
        .expect("a key");
    let fresh = DataKeys::new(db.pool.clone(), Keyring::from_text(&old).expect("a key"));
    assert_eq!(
        keys.erase_subject("acme", &alice).await.expect("erase"),
        Erased {
            subject_keys: 2,
            tenant_keys: 0
        }
    );
    assert!(!readable(&fresh, "acme", &hers, 1).await);
    // Written to again: a new generation, still hers.
    let reopened = keys.for_writing("acme", &hers, None).await.expect("a key");
    assert_eq!(reopened.generation, 2);
    assert_eq!(
        keys.erase_subject("acme", &alice).await.expect("erase"),
        Erased {
            subject_keys: 1,
            tenant_keys: 0
        },
        "the new generation is hers too"
    );
    assert!(!readable(&keys, "acme", &alice, 1).await);
    assert!(!readable(&fresh, "acme", &alice, 1).await);
    assert_eq!(
        keys.erase_subject("acme", &alice)
            .await
            .expect("erase again"),
        Erased::default(),
        "erasing again empties nothing more"
    );
    assert!(readable(&fresh, "acme", &bob, 1).await);
    // Written again afterwards: a new generation, and the old one stays erased.
    let again = keys.for_writing("acme", &alice, None).await.expect("a key");
    assert_eq!(again.generation, 2);
    assert_ne!(again.key.id(), alice_key.id());
    assert!(!readable(&fresh, "acme", &alice, 1).await);

    // A tenant erased: every key under it; another tenant's keys are untouched.
    let globex = keys
        .for_writing("globex", &alice, None)
        .await
        .expect("a key");
    assert_eq!(
        keys.erase_tenant("acme").await.expect("erase"),
        Erased {
            subject_keys: 2,
            tenant_keys: 1
        }
    );
    // (`fresh` read bob's key before: it may serve it from memory for up to the cache's
    // TTL, so a process that has not is asked.)
    let fresh = DataKeys::new(db.pool.clone(), Keyring::from_text(&old).expect("a key"));
    assert!(!readable(&fresh, "acme", &bob, bob_key.generation).await);
    assert!(!readable(&fresh, "acme", &alice, 2).await);
    let still = fresh
        .for_reading("globex", &alice, globex.generation)
        .await
        .expect("read")
        .expect("globex keeps its keys");
    assert_eq!(still.id(), globex.key.id());
    // The tenant writes again: a new tenant key generation and new subject keys.
    let after = keys.for_writing("acme", &bob, None).await.expect("a key");
    assert_eq!(after.generation, 2);
    let tenant_generations: Vec<i32> = sqlx::query_scalar(
        "SELECT generation FROM tenant_keys WHERE tenant_id = 'acme' ORDER BY generation",
    )
    .fetch_all(&db.pool)
    .await
    .expect("tenant keys");
    assert_eq!(tenant_generations, vec![1, 2]);
}

/// Event `sequence` of conversation `id` of acme.
fn at<'a>(id: &'a str, sequence: i64, event_type: &'a str) -> event_store::protect::EventAt<'a> {
    event_store::protect::EventAt {
        tenant: "acme",
        aggregate_type: "conversation",
        aggregate_id: id,
        sequence,
        event_type,
    }
}

#[tokio::test]
async fn a_conversations_fields_are_sealed_under_its_key_and_erased_with_its_starter() {
    use event_store::protect::{Opened, Protector};
    use serde_json::json;
    let db = testkit::env::database().await;
    event_store::migrate(&db.pool).await.expect("migrate");
    let master = Keyring::from_text(&master()).expect("a key");
    let protector = Protector::new(DataKeys::new(db.pool.clone(), master.clone()));
    let id = uuid::Uuid::new_v4().to_string();
    let started = json!({"ConversationStarted": {
        "conversation_id": id, "tenant_id": "acme", "title": "Ann's divorce",
        "metadata": {}, "started_at": 1, "started_by": "ann"
    }});
    let sent = json!({"MessageSent": {
        "conversation_id": id, "message_id": uuid::Uuid::new_v4().to_string(),
        "role": "user", "content": "my address is 1 Elm St", "sent_at": 2
    }});
    let mut stored = Vec::new();
    for (sequence, (event_type, payload)) in
        [("ConversationStarted", &started), ("MessageSent", &sent)]
            .into_iter()
            .enumerate()
    {
        let mut payload = payload.clone();
        let sequence = sequence as i64 + 1;
        protector
            .seal(&at(&id, sequence, event_type), &mut payload)
            .await
            .expect("seals");
        let text = payload.to_string();
        assert!(
            !text.contains("Ann") && !text.contains("Elm") && !text.contains("ann"),
            "{text}"
        );
        stored.push((sequence, event_type, payload));
    }
    // Another process with the same master key reads them in clear.
    let reader = Protector::new(DataKeys::new(db.pool.clone(), master.clone()));
    for ((sequence, event_type, payload), original) in stored.iter().zip([&started, &sent]) {
        let mut read = payload.clone();
        let opened = reader
            .open(&at(&id, *sequence, event_type), &mut read)
            .await
            .expect("opens");
        assert_eq!((opened, &read), (Opened::Opened, original));
    }
    // Ann erased: the conversation she started reads as erased, its non-personal fields
    // as they were.
    protector
        .keys()
        .erase_subject("acme", &Subject::User("ann".into()))
        .await
        .expect("erase");
    let after = Protector::new(DataKeys::new(db.pool.clone(), master));
    let (sequence, event_type, payload) = &stored[1];
    let mut read = payload.clone();
    let opened = after
        .open(&at(&id, *sequence, event_type), &mut read)
        .await
        .expect("reads");
    assert_eq!(opened, Opened::Erased);
    assert_eq!(read["MessageSent"]["content"], "[erased]");
    assert_eq!(read["MessageSent"]["role"], "user");
}
