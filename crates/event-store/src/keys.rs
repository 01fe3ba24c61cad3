//! Crypto-shredding's keys (docs/DATA-PROTECTION.md, "Keys"): a key per subject of a
//! tenant, sealed by the tenant's key, which is sealed by the master keyring from the
//! settings (`DATA_MASTER_KEY`). Erasing a subject empties its key's row; erasing a
//! tenant empties its key and every subject key under it. What an erased key sealed can
//! no longer be read by anyone, wherever copies of it went.
//!
//! The same store keeps the pseudonyms people are named by where they acted
//! (docs/DATA-PROTECTION.md, "Pseudonyms"): erasing a person deletes theirs, in the
//! erasure's transaction, so what named them names nobody.
//!
//! A key has a generation: data written for a subject after its erasure gets a key of
//! the next generation, so the erased data stays unreadable and the new data is not.
//! Unsealed keys are cached in the process for at most [`CACHE_TTL`] and [`CACHE_MAX`]
//! entries, and so is the key each subject's new data is sealed with; an erasure drops the
//! tenant's entries here at once and, through a `NOTIFY` on [`ERASED_CHANNEL`] that
//! [`watch`] listens to, in every other process (the TTL bounds what a missed
//! notification costs; what another process writes for an erased subject meanwhile is
//! sealed with the erased key: unreadable, as the subject's data is meant to be). Each
//! erasure seen moves the process's [`DataKeys::erasures`] count, so caches of data read
//! through the keys (aggregates in memory) can tell that they are to be dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use schemas::Subject;
use schemas::personal::Pseudonym;
use sealing::{Key, Keyring, SealError};
use sqlx::PgPool;

/// The channel an erasure is announced on (its payload: the tenant).
pub const ERASED_CHANNEL: &str = "threadline_data_erased";

/// How long an unsealed key is kept in memory.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// How many unsealed keys are kept in memory at most.
pub const CACHE_MAX: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored key does not open: the master key that sealed it is not configured, or
    /// the row was altered.
    #[error("a stored key does not open: {0}")]
    Sealing(#[from] SealError),
}

/// A subject key and its generation, as ciphertexts name it.
#[derive(Debug, Clone)]
pub struct SubjectKey {
    pub generation: i32,
    pub key: Key,
}

/// What an erasure emptied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    pub subject_keys: u64,
    pub tenant_keys: u64,
}

type CacheKey = (String, String, i32);

/// A subject key's row with its tenant key's (sealed; empty where erased).
#[derive(sqlx::FromRow)]
struct StoredKeys {
    subject_sealed: Option<Vec<u8>>,
    master_key_id: Option<String>,
    tenant_sealed: Option<Vec<u8>>,
    tenant_generation: i32,
}

/// Entries kept for at most [`CACHE_TTL`], at most [`CACHE_MAX`] of them (when full,
/// the expired go, and if none had, all of them).
struct Expiring<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + std::hash::Hash, V: Clone> Expiring<K, V> {
    fn new() -> Self {
        Expiring {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &K) -> Option<V> {
        self.lock()
            .get(key)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, value)| value.clone())
    }

    fn insert(&self, key: K, value: V) {
        let mut entries = self.lock();
        if entries.len() >= CACHE_MAX {
            entries.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if entries.len() >= CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }

    fn retain(&self, keep: impl Fn(&K) -> bool) {
        self.lock().retain(|key, _| keep(key));
    }
}

/// The key store of one process: the master keyring and a bounded cache of unsealed
/// subject keys. Its `Debug` shows no key.
pub struct DataKeys {
    pool: PgPool,
    master: Keyring,
    /// Unsealed keys by (tenant, subject, generation); `None`: erased.
    cache: Expiring<CacheKey, Option<Key>>,
    /// The key new data of a subject is sealed with, per (tenant, subject): a command
    /// asks the database only when its subject is new to this process, or the entry is
    /// older than the TTL.
    writing: Expiring<(String, String), SubjectKey>,
    /// People's pseudonyms by (tenant, actor).
    pseudonyms: Expiring<(String, String), Pseudonym>,
    /// Who pseudonyms name, by (tenant, pseudonym); `None`: erased.
    actors: Expiring<(String, Pseudonym), Option<String>>,
    /// Erasures this process has seen (its own and those announced by others).
    erasures: AtomicU64,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys")
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

fn tenant_context(tenant: &str, generation: i32) -> Vec<u8> {
    format!("threadline tenant key\0{tenant}\0{generation}").into_bytes()
}

fn subject_context(tenant: &str, subject: &str, generation: i32) -> Vec<u8> {
    format!("threadline subject key\0{tenant}\0{subject}\0{generation}").into_bytes()
}

impl DataKeys {
    pub fn new(pool: PgPool, master: Keyring) -> Self {
        DataKeys {
            pool,
            master,
            cache: Expiring::new(),
            writing: Expiring::new(),
            pseudonyms: Expiring::new(),
            actors: Expiring::new(),
            erasures: AtomicU64::new(0),
        }
    }

    /// How many erasures this process has seen: a cache of anything read through these
    /// keys drops what it holds when this moves.
    pub fn erasures(&self) -> u64 {
        self.erasures.load(Ordering::Acquire)
    }

    /// An erasure of `tenant` (every tenant: `None`, when announcements may have been
    /// missed): its cached keys go.
    pub fn erased(&self, tenant: Option<&str>) {
        match tenant {
            Some(tenant) => self.forget(tenant),
            None => {
                self.cache.retain(|_| false);
                self.writing.retain(|_| false);
                self.pseudonyms.retain(|_| false);
                self.actors.retain(|_| false);
            }
        }
        self.erasures.fetch_add(1, Ordering::AcqRel);
    }

    /// The subjects whose keys an erasure of `subject` has emptied by now (the subject's
    /// own and those it owns, erased at any time): for a person, their conversations.
    pub async fn erased_subjects(
        &self,
        tenant: &str,
        subject: &Subject,
    ) -> Result<Vec<Subject>, KeyError> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT subject FROM subject_keys
              WHERE tenant_id = $1 AND (subject = $2 OR owner = $2) AND erased_at IS NOT NULL
              ORDER BY subject",
        )
        .bind(tenant)
        .bind(subject.to_string())
        .fetch_all(&self.pool)
        .await?;
        Ok(names
            .iter()
            .filter_map(|name| Subject::parse(name).ok())
            .collect())
    }

    /// Drops what is cached of `tenant`.
    fn forget(&self, tenant: &str) {
        self.cache.retain(|(t, _, _)| t != tenant);
        self.writing.retain(|(t, _)| t != tenant);
        self.pseudonyms.retain(|(t, _)| t != tenant);
        self.actors.retain(|(t, _)| t != tenant);
    }

    /// The pseudonym `actor` (a person's `sub`, or a service's name) of `tenant` is
    /// stored as, created on first use: concurrent writers agree on one.
    pub async fn pseudonym(&self, tenant: &str, actor: &str) -> Result<Pseudonym, KeyError> {
        let cache_key = (tenant.to_owned(), actor.to_owned());
        if let Some(known) = self.pseudonyms.get(&cache_key) {
            return Ok(known);
        }
        loop {
            let found: Option<uuid::Uuid> = sqlx::query_scalar(
                "SELECT pseudonym FROM pseudonyms WHERE tenant_id = $1 AND actor = $2",
            )
            .bind(tenant)
            .bind(actor)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(id) = found {
                let pseudonym = Pseudonym(id);
                self.pseudonyms.insert(cache_key, pseudonym);
                self.actors
                    .insert((tenant.to_owned(), pseudonym), Some(actor.to_owned()));
                return Ok(pseudonym);
            }
            sqlx::query(
                "INSERT INTO pseudonyms (tenant_id, pseudonym, actor) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(tenant)
            .bind(uuid::Uuid::new_v4())
            .bind(actor)
            .execute(&self.pool)
            .await?;
        }
    }

    /// Who `pseudonym` of `tenant` names; `None` once they are erased. A pseudonym is
    /// stored before any event that names it is committed, so one without a row is
    /// erased, not yet to come.
    pub async fn actor(
        &self,
        tenant: &str,
        pseudonym: Pseudonym,
    ) -> Result<Option<String>, KeyError> {
        let cache_key = (tenant.to_owned(), pseudonym);
        if let Some(known) = self.actors.get(&cache_key) {
            return Ok(known);
        }
        let actor: Option<String> = sqlx::query_scalar(
            "SELECT actor FROM pseudonyms WHERE tenant_id = $1 AND pseudonym = $2",
        )
        .bind(tenant)
        .bind(pseudonym.0)
        .fetch_optional(&self.pool)
        .await?;
        self.actors.insert(cache_key, actor.clone());
        Ok(actor)
    }

    /// The tenant's current key, created on first use (and after an erasure, as a new
    /// generation).
    async fn tenant_key(&self, tenant: &str) -> Result<(i32, Key), KeyError> {
        loop {
            let newest: Option<(i32, Option<String>, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT generation, master_key_id, sealed_key FROM tenant_keys
                  WHERE tenant_id = $1 ORDER BY generation DESC LIMIT 1",
            )
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?;
            let generation = match newest {
                Some((generation, Some(id), Some(sealed))) => {
                    let bytes =
                        self.master
                            .open(&id, &sealed, &tenant_context(tenant, generation))?;
                    return Ok((generation, Key::from_slice(&bytes)?));
                }
                Some((erased, _, _)) => erased + 1,
                None => 1,
            };
            let fresh = Key::generate()?;
            let (id, sealed) = self
                .master
                .seal(fresh.expose(), &tenant_context(tenant, generation))?;
            // Two processes may create it at once: one row wins, both read it back.
            sqlx::query(
                "INSERT INTO tenant_keys (tenant_id, generation, master_key_id, sealed_key)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(tenant)
            .bind(generation)
            .bind(id)
            .bind(sealed)
            .execute(&self.pool)
            .await?;
        }
    }

    /// The key new data of `subject` is sealed with, created on first use (and after an
    /// erasure, as a new generation), owned by `owner` when it is created (a new
    /// generation keeps the previous one's owner when none is given).
    pub async fn for_writing(
        &self,
        tenant: &str,
        subject: &Subject,
        owner: Option<&Subject>,
    ) -> Result<SubjectKey, KeyError> {
        let subject = subject.to_string();
        if let Some(key) = self.writing.get(&(tenant.to_owned(), subject.clone())) {
            return Ok(key);
        }
        let owner = owner.map(Subject::to_string);
        loop {
            let newest: Option<(i32, i32, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT generation, tenant_generation, sealed_key FROM subject_keys
                  WHERE tenant_id = $1 AND subject = $2 ORDER BY generation DESC LIMIT 1",
            )
            .bind(tenant)
            .bind(&subject)
            .fetch_optional(&self.pool)
            .await?;
            let generation = match newest {
                Some((generation, _, Some(_))) => {
                    if let Some(key) = self.read(tenant, &subject, generation).await? {
                        let key = SubjectKey { generation, key };
                        self.writing
                            .insert((tenant.to_owned(), subject.clone()), key.clone());
                        return Ok(key);
                    }
                    // Erased between the two reads: the next generation.
                    generation + 1
                }
                Some((erased, _, None)) => erased + 1,
                None => 1,
            };
            let (tenant_generation, tenant_key) = self.tenant_key(tenant).await?;
            let fresh = Key::generate()?;
            let sealed = tenant_key.seal(
                fresh.expose(),
                &subject_context(tenant, &subject, generation),
            )?;
            sqlx::query(
                "INSERT INTO subject_keys
                        (tenant_id, subject, generation, tenant_generation, sealed_key, owner)
                 VALUES ($1, $2, $3, $4, $5, coalesce($6, (
                        SELECT owner FROM subject_keys WHERE tenant_id = $1 AND subject = $2
                         ORDER BY generation DESC LIMIT 1)))
                 ON CONFLICT DO NOTHING",
            )
            .bind(tenant)
            .bind(&subject)
            .bind(generation)
            .bind(tenant_generation)
            .bind(sealed)
            .bind(&owner)
            .execute(&self.pool)
            .await?;
        }
    }

    /// The key of `subject`'s `generation`: `None` when it was erased (or never existed:
    /// the data it sealed is unreadable either way).
    pub async fn for_reading(
        &self,
        tenant: &str,
        subject: &Subject,
        generation: i32,
    ) -> Result<Option<Key>, KeyError> {
        self.read(tenant, &subject.to_string(), generation).await
    }

    async fn read(
        &self,
        tenant: &str,
        subject: &str,
        generation: i32,
    ) -> Result<Option<Key>, KeyError> {
        let cache_key = (tenant.to_owned(), subject.to_owned(), generation);
        if let Some(known) = self.cache.get(&cache_key) {
            return Ok(known);
        }
        let row: Option<StoredKeys> = sqlx::query_as(
            "SELECT s.sealed_key AS subject_sealed, t.master_key_id, t.sealed_key AS tenant_sealed,
                    t.generation AS tenant_generation
               FROM subject_keys s
               JOIN tenant_keys t ON t.tenant_id = s.tenant_id AND t.generation = s.tenant_generation
              WHERE s.tenant_id = $1 AND s.subject = $2 AND s.generation = $3",
        )
        .bind(tenant)
        .bind(subject)
        .bind(generation)
        .fetch_optional(&self.pool)
        .await?;
        let key = match row {
            // Not created (yet): nothing to remember, a writer may create it any moment.
            None => return Ok(None),
            Some(StoredKeys {
                subject_sealed: Some(sealed),
                master_key_id: Some(master_id),
                tenant_sealed: Some(tenant_sealed),
                tenant_generation,
            }) => {
                let tenant_key = Key::from_slice(&self.master.open(
                    &master_id,
                    &tenant_sealed,
                    &tenant_context(tenant, tenant_generation),
                )?)?;
                let bytes =
                    tenant_key.open(&sealed, &subject_context(tenant, subject, generation))?;
                Some(Key::from_slice(&bytes)?)
            }
            // Erased.
            Some(_) => None,
        };
        self.cache.insert(cache_key, key.clone());
        Ok(key)
    }

    /// Erases every key of `subject` in `tenant` and every key it owns (a person's
    /// conversations). Idempotent: erasing again empties nothing more.
    pub async fn erase_subject(&self, tenant: &str, subject: &Subject) -> Result<Erased, KeyError> {
        let parsed = subject;
        let subject = subject.to_string();
        let mut tx = self.pool.begin().await?;
        let erased: Vec<String> = sqlx::query_scalar(
            "UPDATE subject_keys SET sealed_key = NULL, erased_at = now()
              WHERE tenant_id = $1 AND (subject = $2 OR owner = $2) AND sealed_key IS NOT NULL
             RETURNING subject",
        )
        .bind(tenant)
        .bind(&subject)
        .fetch_all(&mut *tx)
        .await?;
        // What named the person where they acted names nobody from now on.
        if let Subject::User(sub) = &parsed {
            sqlx::query("DELETE FROM pseudonyms WHERE tenant_id = $1 AND actor = $2")
                .bind(tenant)
                .bind(sub)
                .execute(&mut *tx)
                .await?;
        }
        announce(&mut tx, tenant).await?;
        tx.commit().await?;
        self.erased(Some(tenant));
        Ok(Erased {
            subject_keys: erased.len() as u64,
            tenant_keys: 0,
        })
    }

    /// Erases the tenant's keys and every subject key under them, in one transaction.
    pub async fn erase_tenant(&self, tenant: &str) -> Result<Erased, KeyError> {
        let mut tx = self.pool.begin().await?;
        let subjects = sqlx::query(
            "UPDATE subject_keys SET sealed_key = NULL, erased_at = now()
              WHERE tenant_id = $1 AND sealed_key IS NOT NULL",
        )
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        let tenants = sqlx::query(
            "UPDATE tenant_keys SET sealed_key = NULL, master_key_id = NULL, erased_at = now()
              WHERE tenant_id = $1 AND sealed_key IS NOT NULL",
        )
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM pseudonyms WHERE tenant_id = $1")
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        announce(&mut tx, tenant).await?;
        tx.commit().await?;
        self.erased(Some(tenant));
        Ok(Erased {
            subject_keys: subjects.rows_affected(),
            tenant_keys: tenants.rows_affected(),
        })
    }
}

/// Tells every process, when `tx` commits, that keys of `tenant` were erased.
async fn announce(tx: &mut sqlx::PgConnection, tenant: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(ERASED_CHANNEL)
        .bind(tenant)
        .execute(tx)
        .await?;
    Ok(())
}

/// Listens for erasures announced by any process and drops what `keys` caches of them,
/// until `keys` is dropped. A lost connection may have missed some: everything cached
/// is dropped, then it listens again.
pub async fn watch(pool: PgPool, keys: std::sync::Weak<impl AsRef<DataKeys>>) {
    use sqlx::postgres::PgListener;
    let alive = || keys.upgrade();
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::debug!(error = %e, "erasure listener: cannot connect, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if alive().is_none() {
                    return;
                }
                continue;
            }
        };
        if let Err(e) = listener.listen(ERASED_CHANNEL).await {
            tracing::debug!(error = %e, "erasure listener: LISTEN failed, retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            // Wakes now and then to end once nobody holds the keys.
            let received = tokio::time::timeout(Duration::from_secs(30), listener.try_recv()).await;
            let Some(keys) = alive() else {
                return;
            };
            match received {
                Err(_elapsed) => {}
                Ok(Ok(Some(n))) => (*keys).as_ref().erased(Some(n.payload())),
                Ok(Ok(None)) => {
                    (*keys).as_ref().erased(None);
                    break;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "erasure listener failed, reconnecting");
                    (*keys).as_ref().erased(None);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}
