//! Runs the vector store conformance suite (`vectors::conformance`) against a store, and
//! exits non-zero when a case fails:
//!
//!     cargo run -p vectors --example conformance -- --qdrant http://qdrant:6334 [--qdrant-api-key KEY]
//!     dev/stack exec -- cargo run -p vectors --example conformance -- --postgres
//!
//! Against Qdrant it works in collections named `<prefix>conformance_<pid>_<case>` and
//! drops each whose case passed. Run it before pointing a deployment at a Qdrant version
//! it has not met (docs/OPERATIONS.md).

use std::process::ExitCode;
use std::time::Duration;

use vectors::VectorStore;
use vectors::qdrant::{QdrantConfig, QdrantStore};

/// Runs the vector store conformance suite against a real store.
#[derive(Debug, clap::Parser)]
struct Cli {
    /// A Qdrant gRPC endpoint, e.g. `http://localhost:6334`.
    #[arg(
        long,
        conflicts_with = "postgres",
        required_unless_present = "postgres"
    )]
    qdrant: Option<String>,
    /// Qdrant's API key.
    #[arg(
        long = "qdrant-api-key",
        env = "QDRANT_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// The collection prefix.
    #[arg(long, default_value = vectors::qdrant::DEFAULT_PREFIX)]
    prefix: String,
    /// The PostgreSQL store in the database of `DATABASE_URL`.
    #[arg(long)]
    postgres: bool,
    /// The database (for `--postgres`).
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let cli: Cli = clap::Parser::parse();
    let run = format!("conformance_{}", std::process::id());
    let store: Box<dyn VectorStore> = match cli.qdrant {
        Some(url) => Box::new(
            QdrantStore::connect(QdrantConfig {
                url,
                api_key: cli.api_key,
                collection_prefix: cli.prefix,
                timeout: Duration::from_secs(10),
            })
            .await?,
        ),
        None => {
            let url = cli.database_url.ok_or("--postgres needs DATABASE_URL")?;
            let pool = sqlx::PgPool::connect(&url).await?;
            Box::new(vectors::pg::PgStore::new(pool).await?)
        }
    };
    let outcomes = vectors::conformance::run(store.as_ref(), &run).await;
    let mut failed = 0;
    for outcome in &outcomes {
        match &outcome.result {
            Ok(()) => println!("ok    {}", outcome.case),
            Err(e) => {
                failed += 1;
                println!("FAIL  {}: {e}", outcome.case);
            }
        }
    }
    println!(
        "{} of {} cases passed",
        outcomes.len() - failed,
        outcomes.len()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
