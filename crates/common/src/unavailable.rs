//! Telling an unavailable database from a refused statement: the one classification every
//! caller uses (commands answer 503 with `Retry-After` instead of 500, projectors wait
//! instead of parking, the PostgreSQL vector store answers `Unavailable`). The SQLSTATE
//! rule is plain; the functions over `sqlx::Error` come with the `sqlx` feature.

/// SQLSTATEs of a database that is unreachable or busy rather than refusing the work:
/// class 08 (connection), 40 (deadlock, serialisation), 53 (insufficient resources),
/// 57P (shutting down, cannot connect now), 57014 (statement timeout, query cancelled),
/// 55P03 (lock not available), 55006 (object in use).
pub fn is_transient_sqlstate(code: &str) -> bool {
    ["08", "40", "53", "57P"]
        .iter()
        .any(|class| code.starts_with(class))
        || matches!(code, "57014" | "55P03" | "55006")
}

#[cfg(feature = "sqlx")]
/// Whether `e` says the database is unavailable, overloaded or restarting (worth
/// retrying later) rather than that the statement itself was refused.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_transient_sqlstate(&code)),
        _ => false,
    }
}

#[cfg(feature = "sqlx")]
/// The same for an error of unknown type (cqrs-es boxes the database's errors).
pub fn is_unavailable_dyn(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<sqlx::Error>().is_some_and(is_unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_and_busy_databases_are_unavailable_refusals_are_not() {
        for code in [
            "08006", "40001", "40P01", "53300", "57P01", "57014", "55P03",
        ] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "42P01", "22001", "P0001"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
    }

    #[cfg(feature = "sqlx")]
    #[test]
    fn a_pool_that_timed_out_is_unavailable_a_missing_row_is_not() {
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
    }
}
