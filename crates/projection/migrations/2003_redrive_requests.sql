-- A re-drive asked for over the API (an admin's `POST /v1/admin/projections/{name}/redrive`):
-- the running projector of that projection takes the request and re-drives its parked
-- events itself, as the relay does with relay_cursor.redrive_requested_at.
ALTER TABLE projections
    ADD COLUMN redrive_requested_at timestamptz;
