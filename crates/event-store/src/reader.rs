//! The store as its readers and writers hold it: the database, and, when data protection
//! is on (`DATA_MASTER_KEY`), the keys that seal and open personal fields
//! (docs/DATA-PROTECTION.md). Every reader of events takes a [`Reader`], so no reader can
//! forget to open what is sealed.

use std::sync::Arc;

use serde_json::Value;
use sqlx::PgPool;

use crate::keys::DataKeys;
use crate::protect::{self, EventAt, Opened, ProtectError, Protector};

/// The settings of data protection (every process that reads or writes events).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Data protection")]
pub struct DataProtection {
    /// Base64 of 32 random bytes that seals the tenants' data keys; comma-separated to
    /// rotate it (the first seals, all open). Set: personal fields of new events are
    /// stored sealed and read in clear through the keys (docs/DATA-PROTECTION.md). Unset:
    /// they are stored in clear, and a sealed event cannot be read. The same value in
    /// every service.
    #[arg(
        long = "data-master-key",
        env = "DATA_MASTER_KEY",
        hide_env_values = true
    )]
    pub master_key: Option<String>,
}

impl DataProtection {
    /// The master keyring, if one is set (an invalid one is an error before anything
    /// connects).
    pub fn keyring(&self) -> Result<Option<sealing::Keyring>, sealing::SealError> {
        self.master_key
            .as_deref()
            .map(sealing::Keyring::from_text)
            .transpose()
    }
}

/// The event store's pool and, with data protection on, its [`Protector`]. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Reader {
    pool: PgPool,
    protector: Option<Arc<Protector>>,
}

impl Reader {
    /// Without data protection: nothing is sealed, and a sealed event is an error.
    pub fn plain(pool: PgPool) -> Self {
        Reader {
            pool,
            protector: None,
        }
    }

    /// Protected by `master` when there is one ([`DataProtection::keyring`]). On a Tokio
    /// runtime, it listens for erasures announced by other processes while it is held
    /// ([`crate::keys::watch`]: one connection of `pool`).
    pub fn new(pool: PgPool, master: Option<sealing::Keyring>) -> Self {
        let Some(master) = master else {
            return Reader::plain(pool);
        };
        let keys = DataKeys::new(pool.clone(), master);
        let protector = Arc::new(Protector::new(keys));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(crate::keys::watch(pool.clone(), Arc::downgrade(&protector)));
        }
        Reader {
            pool,
            protector: Some(protector),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The same keys over another pool of the same database (one sized for a task).
    pub fn on_pool(&self, pool: PgPool) -> Reader {
        Reader {
            pool,
            protector: self.protector.clone(),
        }
    }

    /// The keys, when data protection is on.
    pub fn protector(&self) -> Option<&Protector> {
        self.protector.as_deref()
    }

    /// Opens the stored event `at` in place.
    pub async fn open(
        &self,
        at: &EventAt<'_>,
        payload: &mut Value,
    ) -> Result<Opened, ProtectError> {
        match &self.protector {
            Some(protector) => protector.open(at, payload).await,
            None => match protect::sealed_box(payload, at.event_type)? {
                None => Ok(Opened::Plain),
                Some(_) => Err(ProtectError::Malformed(
                    "the event is sealed and DATA_MASTER_KEY is not set".into(),
                )),
            },
        }
    }

    /// Who the stored id `actor` of `tenant` names (an event's metadata `user_id`, the
    /// Kafka header of the same name): a pseudonym reads as the person's id, `[erased]`
    /// once they are erased; an id stored in clear as it is.
    pub async fn actor(&self, tenant: &str, actor: &str) -> Result<String, ProtectError> {
        match &self.protector {
            Some(protector) => protector.actor(tenant, actor).await,
            None => Ok(actor.to_owned()),
        }
    }

    /// Opens a row read from the log in place (its tenant from its metadata).
    pub async fn open_stored(
        &self,
        stored: &mut crate::log::StoredEvent,
    ) -> Result<Opened, ProtectError> {
        let tenant = stored.meta("tenant_id").unwrap_or_default().to_owned();
        let at = EventAt {
            tenant: &tenant,
            aggregate_type: &stored.aggregate_type,
            aggregate_id: &stored.aggregate_id,
            sequence: stored.sequence,
            event_type: &stored.event_type,
        };
        self.open(&at, &mut stored.payload).await
    }
}

/// A pool alone is a store without data protection (tests, tools).
impl From<PgPool> for Reader {
    fn from(pool: PgPool) -> Self {
        Reader::plain(pool)
    }
}

impl From<&PgPool> for Reader {
    fn from(pool: &PgPool) -> Self {
        Reader::plain(pool.clone())
    }
}
