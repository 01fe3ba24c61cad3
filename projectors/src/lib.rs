//! Projector runtime and projector binaries (read models, embeddings, analytics, webhooks). Built in the read-side issue.
