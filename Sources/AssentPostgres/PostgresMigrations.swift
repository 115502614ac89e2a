/// Numbered migrations for PostgreSQL. Never edit one that has shipped: add
/// the next. Each is a list of statements (the extended protocol runs one
/// statement per query), applied in one transaction with its version row.
///
/// Every table that holds per-contact rows has `contact_id` in its primary
/// key, so that the schema distributes by contact (Citus) with no cross-shard
/// transaction on the write path.
enum PostgresMigrations {
    static let all: [(version: String, statements: [String])] = [
        ("0001_ledger", [
            """
            CREATE TABLE topics (
                key TEXT PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 64),
                title TEXT NOT NULL,
                description TEXT NOT NULL,
                category TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('active', 'retired')),
                requires_double_opt_in BOOLEAN NOT NULL,
                consent_lifetime_days BIGINT CHECK (consent_lifetime_days > 0),
                current_notice_version BIGINT NOT NULL CHECK (current_notice_version >= 1),
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE notices (
                topic_key TEXT NOT NULL REFERENCES topics(key),
                version BIGINT NOT NULL CHECK (version >= 1),
                text TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                PRIMARY KEY (topic_key, version)
            )
            """,
            """
            CREATE TABLE contacts (
                id UUID PRIMARY KEY,
                email TEXT UNIQUE,
                name TEXT,
                external_id TEXT UNIQUE,
                locale TEXT,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE contact_keys (
                contact_id UUID PRIMARY KEY REFERENCES contacts(id),
                wrapped_key BYTEA NOT NULL
            )
            """,
            """
            CREATE TABLE consent_events (
                contact_id UUID NOT NULL REFERENCES contacts(id),
                seq BIGINT NOT NULL CHECK (seq >= 1),
                id UUID NOT NULL,
                topic_key TEXT NOT NULL REFERENCES topics(key),
                action TEXT NOT NULL CHECK (action IN ('requested', 'granted', 'confirmed', 'withdrawn', 'expired')),
                from_state TEXT NOT NULL CHECK (from_state IN ('none', 'pending', 'granted', 'withdrawn', 'expired')),
                to_state TEXT NOT NULL CHECK (to_state IN ('none', 'pending', 'granted', 'withdrawn', 'expired')),
                source TEXT NOT NULL,
                channel TEXT,
                actor_kind TEXT NOT NULL,
                actor_id TEXT,
                occurred_at BIGINT NOT NULL,
                recorded_at BIGINT NOT NULL,
                expires_at BIGINT,
                notice_version BIGINT,
                form_id TEXT,
                form_version BIGINT,
                batch_id TEXT,
                sealed_evidence BYTEA,
                prev_hash BYTEA NOT NULL,
                hash BYTEA NOT NULL,
                PRIMARY KEY (contact_id, seq),
                UNIQUE (contact_id, id)
            )
            """,
            "CREATE INDEX consent_events_recorded_at ON consent_events (recorded_at)",
            """
            CREATE FUNCTION assent_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME;
            END
            $$
            """,
            // The ledger is append-only. A superuser can drop these; `assent verify` is what catches that.
            "CREATE TRIGGER consent_events_immutable BEFORE UPDATE OR DELETE ON consent_events FOR EACH ROW EXECUTE FUNCTION assent_refuse_change()",
            "CREATE TRIGGER notices_immutable BEFORE UPDATE OR DELETE ON notices FOR EACH ROW EXECUTE FUNCTION assent_refuse_change()",
            """
            CREATE TABLE chain_heads (
                contact_id UUID PRIMARY KEY REFERENCES contacts(id),
                seq BIGINT NOT NULL,
                hash BYTEA NOT NULL
            )
            """,
            """
            CREATE TABLE preferences (
                contact_id UUID NOT NULL REFERENCES contacts(id),
                topic_key TEXT NOT NULL REFERENCES topics(key),
                state TEXT NOT NULL CHECK (state IN ('none', 'pending', 'granted', 'withdrawn', 'expired')),
                since BIGINT NOT NULL,
                expires_at BIGINT,
                seq BIGINT NOT NULL,
                PRIMARY KEY (contact_id, topic_key)
            )
            """,
            """
            CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                scope TEXT NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
                secret_hash BYTEA NOT NULL,
                created_at BIGINT NOT NULL,
                revoked_at BIGINT
            )
            """,
            """
            CREATE TABLE idempotency_keys (
                scope TEXT NOT NULL,
                key TEXT NOT NULL,
                request_hash BYTEA NOT NULL,
                status BIGINT,
                content_type TEXT,
                body BYTEA,
                created_at BIGINT NOT NULL,
                PRIMARY KEY (scope, key)
            )
            """,
            "CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at)",
        ]),
        ("0002_outbox_and_confirmations", [
            """
            CREATE TABLE outbox (
                id UUID PRIMARY KEY,
                contact_id UUID REFERENCES contacts(id),
                kind TEXT NOT NULL,
                payload BYTEA NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'dead')),
                attempts BIGINT NOT NULL DEFAULT 0,
                next_attempt_at BIGINT NOT NULL,
                claimed_until BIGINT,
                last_error TEXT,
                created_at BIGINT NOT NULL,
                sent_at BIGINT
            )
            """,
            // Workers look for due pending items only; a partial index keeps that small.
            "CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending'",
            "CREATE INDEX outbox_created_at ON outbox (created_at)",
            """
            CREATE TABLE confirmation_tokens (
                hash BYTEA PRIMARY KEY,
                contact_id UUID NOT NULL REFERENCES contacts(id),
                topics TEXT[] NOT NULL,
                confirmed_topics TEXT[] NOT NULL DEFAULT '{}',
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                superseded_at BIGINT
            )
            """,
            "CREATE INDEX confirmation_tokens_contact ON confirmation_tokens (contact_id)",
        ]),
        ("0003_signing_keys", [
            """
            CREATE TABLE signing_keys (
                key_id TEXT PRIMARY KEY,
                sealed_private_key BYTEA NOT NULL,
                created_at BIGINT NOT NULL
            )
            """,
            // Receipts are fetched by event id alone.
            "CREATE INDEX consent_events_id ON consent_events (id)",
        ]),
        ("0004_forms_and_links", [
            """
            CREATE TABLE forms (
                id TEXT PRIMARY KEY,
                current_version BIGINT NOT NULL CHECK (current_version >= 1),
                status TEXT NOT NULL CHECK (status IN ('active', 'retired')),
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL
            )
            """,
            // Every saved version is kept: events name the form version a person used.
            """
            CREATE TABLE form_versions (
                form_id TEXT NOT NULL REFERENCES forms(id),
                version BIGINT NOT NULL CHECK (version >= 1),
                definition TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                PRIMARY KEY (form_id, version)
            )
            """,
            "CREATE TRIGGER form_versions_immutable BEFORE UPDATE OR DELETE ON form_versions FOR EACH ROW EXECUTE FUNCTION assent_refuse_change()",
            """
            CREATE TABLE contact_link_secrets (
                contact_id UUID PRIMARY KEY REFERENCES contacts(id),
                secret BYTEA NOT NULL,
                created_at BIGINT NOT NULL
            )
            """,
        ]),
        ("0005_portal_and_requests", [
            """
            CREATE TABLE portal_links (
                hash BYTEA PRIMARY KEY,
                contact_id UUID NOT NULL REFERENCES contacts(id),
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                used_at BIGINT
            )
            """,
            "CREATE INDEX portal_links_contact ON portal_links (contact_id, created_at)",
            """
            CREATE TABLE portal_sessions (
                hash BYTEA PRIMARY KEY,
                contact_id UUID NOT NULL REFERENCES contacts(id),
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX portal_sessions_contact ON portal_sessions (contact_id)",
            """
            CREATE TABLE subject_requests (
                id UUID PRIMARY KEY,
                contact_id UUID NOT NULL REFERENCES contacts(id),
                kind TEXT NOT NULL CHECK (kind IN ('access', 'erasure', 'objection', 'rectification')),
                status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
                channel TEXT NOT NULL,
                note TEXT,
                created_at BIGINT NOT NULL,
                due_at BIGINT NOT NULL,
                closed_at BIGINT
            )
            """,
            "CREATE INDEX subject_requests_contact ON subject_requests (contact_id)",
            "CREATE INDEX subject_requests_status ON subject_requests (status, due_at)",
            // One open request of each kind per person: a double click records one.
            "CREATE UNIQUE INDEX subject_requests_one_open ON subject_requests (contact_id, kind) WHERE status = 'open'",
        ]),
        ("0006_staff_and_audit", [
            """
            CREATE TABLE staff_users (
                id UUID PRIMARY KEY,
                email TEXT NOT NULL UNIQUE,
                name TEXT NOT NULL,
                role TEXT NOT NULL CHECK (role IN ('admin', 'agent', 'auditor')),
                password_hash TEXT NOT NULL,
                must_change_password BOOLEAN NOT NULL DEFAULT false,
                failed_sign_ins BIGINT NOT NULL DEFAULT 0,
                locked_until BIGINT,
                created_at BIGINT NOT NULL,
                disabled_at BIGINT
            )
            """,
            """
            CREATE TABLE staff_sessions (
                hash BYTEA PRIMARY KEY,
                user_id UUID NOT NULL REFERENCES staff_users(id),
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX staff_sessions_user ON staff_sessions (user_id)",
            """
            CREATE TABLE audit_log (
                id UUID PRIMARY KEY,
                at BIGINT NOT NULL,
                actor_id UUID,
                actor_email TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT,
                detail TEXT,
                ip_address TEXT
            )
            """,
            "CREATE INDEX audit_log_at ON audit_log (at)",
            "CREATE INDEX audit_log_actor ON audit_log (actor_id, at)",
            "CREATE INDEX audit_log_target ON audit_log (target, at)",
            // The audit log is append-only.
            "CREATE TRIGGER audit_log_immutable BEFORE UPDATE OR DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION assent_refuse_change()",
        ]),
        ("0007_erasure_and_objection", [
            "ALTER TABLE contacts ADD COLUMN erased_at BIGINT",
            "ALTER TABLE contacts ADD COLUMN objected_at BIGINT",
            "ALTER TABLE subject_requests ADD COLUMN outcome TEXT",
            "ALTER TABLE subject_requests ADD COLUMN identity_note TEXT",
            "ALTER TABLE subject_requests ADD COLUMN extension_reason TEXT",
            "ALTER TABLE subject_requests ADD COLUMN handler TEXT",
            // The expiry scheduler looks for live grants past their lifetime.
            "CREATE INDEX preferences_expiry ON preferences (expires_at) WHERE state = 'granted' AND expires_at IS NOT NULL",
            // Keyed hashes (HMAC) of erased people's emails: proof of the
            // erasure, and a block on adding them back without fresh consent.
            """
            CREATE TABLE suppressions (
                email_hash BYTEA PRIMARY KEY,
                contact_id UUID NOT NULL REFERENCES contacts(id),
                erased_at BIGINT NOT NULL,
                reason TEXT NOT NULL,
                erased_by TEXT NOT NULL
            )
            """,
        ]),
        ("0008_segments_and_repermission", [
            "ALTER TABLE topics ADD COLUMN repermission_days BIGINT CHECK (repermission_days > 0)",
            // Saved audience definitions, and their size once a day.
            """
            CREATE TABLE segments (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                description TEXT NOT NULL,
                definition TEXT NOT NULL,
                created_by TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE segment_sizes (
                segment_id TEXT NOT NULL REFERENCES segments(id) ON DELETE CASCADE,
                day TEXT NOT NULL,
                size BIGINT NOT NULL,
                measured_at BIGINT NOT NULL,
                PRIMARY KEY (segment_id, day)
            )
            """,
            // One re-permission email per grant: the key is the grant's expiry.
            """
            CREATE TABLE repermission_requests (
                contact_id UUID NOT NULL REFERENCES contacts(id),
                topic_key TEXT NOT NULL REFERENCES topics(key),
                grant_expires_at BIGINT NOT NULL,
                sent_at BIGINT NOT NULL,
                outbox_id UUID NOT NULL,
                PRIMARY KEY (contact_id, topic_key, grant_expires_at)
            )
            """,
        ]),
        ("0009_webhooks", [
            """
            CREATE TABLE webhook_endpoints (
                id TEXT PRIMARY KEY,
                url TEXT NOT NULL,
                description TEXT NOT NULL,
                events TEXT NOT NULL,
                topics TEXT NOT NULL,
                sources TEXT NOT NULL,
                enabled BOOLEAN NOT NULL,
                allow_private_network BOOLEAN NOT NULL,
                sealed_secret BYTEA NOT NULL,
                created_by TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL
            )
            """,
            // The ordinal orders deliveries: one contact's reach an endpoint in this order.
            """
            CREATE TABLE webhook_deliveries (
                ordinal BIGSERIAL PRIMARY KEY,
                id UUID NOT NULL UNIQUE,
                endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
                event_type TEXT NOT NULL,
                contact_id UUID,
                payload BYTEA NOT NULL,
                status TEXT NOT NULL,
                attempts BIGINT NOT NULL,
                next_attempt_at BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                delivered_at BIGINT,
                last_status_code BIGINT,
                last_error TEXT
            )
            """,
            "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending'",
            "CREATE INDEX webhook_deliveries_order ON webhook_deliveries (endpoint_id, contact_id, ordinal) WHERE status = 'pending'",
            "CREATE INDEX webhook_deliveries_log ON webhook_deliveries (endpoint_id, created_at)",
            "CREATE INDEX webhook_deliveries_contact ON webhook_deliveries (contact_id)",
            """
            CREATE TABLE webhook_attempts (
                delivery_id UUID NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
                number BIGINT NOT NULL,
                at BIGINT NOT NULL,
                status_code BIGINT,
                latency_ms BIGINT NOT NULL,
                response TEXT,
                error TEXT,
                PRIMARY KEY (delivery_id, number)
            )
            """,
        ]),
        // The weekly and funnel reports read a period of events by when they happened.
        ("0010_event_time_index", [
            "CREATE INDEX consent_events_occurred_at ON consent_events(occurred_at)",
        ]),
        ("0011_verify_runs", [
            """
            CREATE TABLE verify_runs (
                id BIGSERIAL PRIMARY KEY,
                finished_at BIGINT NOT NULL,
                seconds DOUBLE PRECISION NOT NULL,
                contacts BIGINT NOT NULL,
                events BIGINT NOT NULL,
                breaks BIGINT NOT NULL,
                origin TEXT NOT NULL)
            """,
        ]),
        // The send-time checks look contacts up by address for their id: with the id in the
        // index, PostgreSQL can answer from the index alone (an index-only scan, once VACUUM
        // has marked the table's pages all-visible) instead of reading each contact's row.
        ("0012_check_index", [
            "CREATE INDEX contacts_email_id ON contacts(email) INCLUDE (id)",
        ]),
    ]
}
