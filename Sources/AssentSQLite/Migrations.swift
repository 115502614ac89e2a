import GRDB

/// Numbered migrations. Never edit one that has shipped: add the next.
/// They use literal SQL, not app types, so they mean the same thing forever.
enum SQLiteMigrations {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("0001_ledger") { db in
            try db.execute(sql: """
                CREATE TABLE topics (
                    key TEXT PRIMARY KEY NOT NULL CHECK (length(key) BETWEEN 1 AND 64),
                    title TEXT NOT NULL,
                    description TEXT NOT NULL,
                    category TEXT NOT NULL,
                    status TEXT NOT NULL CHECK (status IN ('active', 'retired')),
                    requires_double_opt_in INTEGER NOT NULL CHECK (requires_double_opt_in IN (0, 1)),
                    consent_lifetime_days INTEGER CHECK (consent_lifetime_days > 0),
                    current_notice_version INTEGER NOT NULL CHECK (current_notice_version >= 1),
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                );
                CREATE TABLE notices (
                    topic_key TEXT NOT NULL REFERENCES topics(key),
                    version INTEGER NOT NULL CHECK (version >= 1),
                    text TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    PRIMARY KEY (topic_key, version)
                ) WITHOUT ROWID;
                CREATE TRIGGER notices_immutable_update BEFORE UPDATE ON notices
                BEGIN SELECT RAISE(ABORT, 'notice versions are immutable'); END;
                CREATE TRIGGER notices_immutable_delete BEFORE DELETE ON notices
                BEGIN SELECT RAISE(ABORT, 'notice versions are immutable'); END;

                CREATE TABLE contacts (
                    id TEXT PRIMARY KEY NOT NULL,
                    email TEXT UNIQUE,
                    name TEXT,
                    external_id TEXT UNIQUE,
                    locale TEXT,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                );
                CREATE TABLE contact_keys (
                    contact_id TEXT PRIMARY KEY NOT NULL REFERENCES contacts(id),
                    wrapped_key BLOB NOT NULL
                ) WITHOUT ROWID;

                CREATE TABLE consent_events (
                    id TEXT PRIMARY KEY NOT NULL,
                    contact_id TEXT NOT NULL REFERENCES contacts(id),
                    seq INTEGER NOT NULL CHECK (seq >= 1),
                    topic_key TEXT NOT NULL REFERENCES topics(key),
                    action TEXT NOT NULL CHECK (action IN ('requested', 'granted', 'confirmed', 'withdrawn', 'expired')),
                    from_state TEXT NOT NULL CHECK (from_state IN ('none', 'pending', 'granted', 'withdrawn', 'expired')),
                    to_state TEXT NOT NULL CHECK (to_state IN ('none', 'pending', 'granted', 'withdrawn', 'expired')),
                    source TEXT NOT NULL,
                    channel TEXT,
                    actor_kind TEXT NOT NULL,
                    actor_id TEXT,
                    occurred_at INTEGER NOT NULL,
                    recorded_at INTEGER NOT NULL,
                    expires_at INTEGER,
                    notice_version INTEGER,
                    form_id TEXT,
                    form_version INTEGER,
                    batch_id TEXT,
                    sealed_evidence BLOB,
                    prev_hash BLOB NOT NULL,
                    hash BLOB NOT NULL,
                    UNIQUE (contact_id, seq)
                );
                CREATE INDEX consent_events_recorded_at ON consent_events(recorded_at);
                -- The ledger is append-only. Someone with the file can drop these
                -- triggers; `assent verify` is what catches that.
                CREATE TRIGGER consent_events_immutable_update BEFORE UPDATE ON consent_events
                BEGIN SELECT RAISE(ABORT, 'consent events are immutable'); END;
                CREATE TRIGGER consent_events_immutable_delete BEFORE DELETE ON consent_events
                BEGIN SELECT RAISE(ABORT, 'consent events are immutable'); END;

                CREATE TABLE chain_heads (
                    contact_id TEXT PRIMARY KEY NOT NULL REFERENCES contacts(id),
                    seq INTEGER NOT NULL,
                    hash BLOB NOT NULL
                ) WITHOUT ROWID;

                CREATE TABLE preferences (
                    contact_id TEXT NOT NULL REFERENCES contacts(id),
                    topic_key TEXT NOT NULL REFERENCES topics(key),
                    state TEXT NOT NULL CHECK (state IN ('none', 'pending', 'granted', 'withdrawn', 'expired')),
                    since INTEGER NOT NULL,
                    expires_at INTEGER,
                    seq INTEGER NOT NULL,
                    PRIMARY KEY (contact_id, topic_key)
                ) WITHOUT ROWID;

                CREATE TABLE api_keys (
                    id TEXT PRIMARY KEY NOT NULL,
                    name TEXT NOT NULL,
                    scope TEXT NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
                    secret_hash BLOB NOT NULL,
                    created_at INTEGER NOT NULL,
                    revoked_at INTEGER
                );

                CREATE TABLE idempotency_keys (
                    scope TEXT NOT NULL,
                    key TEXT NOT NULL,
                    request_hash BLOB NOT NULL,
                    status INTEGER,
                    content_type TEXT,
                    body BLOB,
                    created_at INTEGER NOT NULL,
                    PRIMARY KEY (scope, key)
                ) WITHOUT ROWID;
                CREATE INDEX idempotency_keys_created_at ON idempotency_keys(created_at);
                """)
        }
        migrator.registerMigration("0002_outbox_and_confirmations") { db in
            try db.execute(sql: """
                CREATE TABLE outbox (
                    id TEXT PRIMARY KEY NOT NULL,
                    contact_id TEXT REFERENCES contacts(id),
                    kind TEXT NOT NULL,
                    payload BLOB NOT NULL,
                    status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'dead')),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at INTEGER NOT NULL,
                    claimed_until INTEGER,
                    last_error TEXT,
                    created_at INTEGER NOT NULL,
                    sent_at INTEGER
                );
                CREATE INDEX outbox_due ON outbox(status, next_attempt_at);
                CREATE INDEX outbox_created_at ON outbox(created_at);

                CREATE TABLE confirmation_tokens (
                    hash BLOB PRIMARY KEY NOT NULL,
                    contact_id TEXT NOT NULL REFERENCES contacts(id),
                    topics TEXT NOT NULL,
                    confirmed_topics TEXT NOT NULL DEFAULT '',
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    superseded_at INTEGER
                ) WITHOUT ROWID;
                CREATE INDEX confirmation_tokens_contact ON confirmation_tokens(contact_id);
                """)
        }
        migrator.registerMigration("0003_signing_keys") { db in
            try db.execute(sql: """
                CREATE TABLE signing_keys (
                    key_id TEXT PRIMARY KEY NOT NULL,
                    sealed_private_key BLOB NOT NULL,
                    created_at INTEGER NOT NULL
                );
                """)
        }
        migrator.registerMigration("0004_forms_and_links") { db in
            try db.execute(sql: """
                CREATE TABLE forms (
                    id TEXT PRIMARY KEY NOT NULL,
                    current_version INTEGER NOT NULL CHECK (current_version >= 1),
                    status TEXT NOT NULL CHECK (status IN ('active', 'retired')),
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                );

                -- Every saved version is kept: events name the form version a person used.
                CREATE TABLE form_versions (
                    form_id TEXT NOT NULL REFERENCES forms(id),
                    version INTEGER NOT NULL CHECK (version >= 1),
                    definition TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    PRIMARY KEY (form_id, version)
                ) WITHOUT ROWID;
                CREATE TRIGGER form_versions_no_update BEFORE UPDATE ON form_versions
                BEGIN SELECT RAISE(ABORT, 'form versions are immutable'); END;
                CREATE TRIGGER form_versions_no_delete BEFORE DELETE ON form_versions
                BEGIN SELECT RAISE(ABORT, 'form versions are immutable'); END;

                CREATE TABLE contact_link_secrets (
                    contact_id TEXT PRIMARY KEY NOT NULL REFERENCES contacts(id),
                    secret BLOB NOT NULL,
                    created_at INTEGER NOT NULL
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("0005_portal_and_requests") { db in
            try db.execute(sql: """
                CREATE TABLE portal_links (
                    hash BLOB PRIMARY KEY NOT NULL,
                    contact_id TEXT NOT NULL REFERENCES contacts(id),
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    used_at INTEGER
                ) WITHOUT ROWID;
                CREATE INDEX portal_links_contact ON portal_links(contact_id, created_at);

                CREATE TABLE portal_sessions (
                    hash BLOB PRIMARY KEY NOT NULL,
                    contact_id TEXT NOT NULL REFERENCES contacts(id),
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL
                ) WITHOUT ROWID;
                CREATE INDEX portal_sessions_contact ON portal_sessions(contact_id);

                CREATE TABLE subject_requests (
                    id TEXT PRIMARY KEY NOT NULL,
                    contact_id TEXT NOT NULL REFERENCES contacts(id),
                    kind TEXT NOT NULL CHECK (kind IN ('access', 'erasure', 'objection', 'rectification')),
                    status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
                    channel TEXT NOT NULL,
                    note TEXT,
                    created_at INTEGER NOT NULL,
                    due_at INTEGER NOT NULL,
                    closed_at INTEGER
                );
                CREATE INDEX subject_requests_contact ON subject_requests(contact_id);
                CREATE INDEX subject_requests_status ON subject_requests(status, due_at);
                -- One open request of each kind per person: a double click records one.
                CREATE UNIQUE INDEX subject_requests_one_open ON subject_requests(contact_id, kind) WHERE status = 'open';
                """)
        }
        migrator.registerMigration("0006_staff_and_audit") { db in
            try db.execute(sql: """
                CREATE TABLE staff_users (
                    id TEXT PRIMARY KEY NOT NULL,
                    email TEXT NOT NULL UNIQUE,
                    name TEXT NOT NULL,
                    role TEXT NOT NULL CHECK (role IN ('admin', 'agent', 'auditor')),
                    password_hash TEXT NOT NULL,
                    must_change_password INTEGER NOT NULL DEFAULT 0,
                    failed_sign_ins INTEGER NOT NULL DEFAULT 0,
                    locked_until INTEGER,
                    created_at INTEGER NOT NULL,
                    disabled_at INTEGER
                );

                CREATE TABLE staff_sessions (
                    hash BLOB PRIMARY KEY NOT NULL,
                    user_id TEXT NOT NULL REFERENCES staff_users(id),
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL
                ) WITHOUT ROWID;
                CREATE INDEX staff_sessions_user ON staff_sessions(user_id);

                CREATE TABLE audit_log (
                    id TEXT PRIMARY KEY NOT NULL,
                    at INTEGER NOT NULL,
                    actor_id TEXT,
                    actor_email TEXT NOT NULL,
                    action TEXT NOT NULL,
                    target TEXT,
                    detail TEXT,
                    ip_address TEXT
                );
                CREATE INDEX audit_log_at ON audit_log(at);
                CREATE INDEX audit_log_actor ON audit_log(actor_id, at);
                CREATE INDEX audit_log_target ON audit_log(target, at);
                -- The audit log is append-only.
                CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
                BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
                BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                """)
        }
        migrator.registerMigration("0007_erasure_and_objection") { db in
            try db.execute(sql: """
                ALTER TABLE contacts ADD COLUMN erased_at INTEGER;
                ALTER TABLE contacts ADD COLUMN objected_at INTEGER;
                ALTER TABLE subject_requests ADD COLUMN outcome TEXT;
                ALTER TABLE subject_requests ADD COLUMN identity_note TEXT;
                ALTER TABLE subject_requests ADD COLUMN extension_reason TEXT;
                ALTER TABLE subject_requests ADD COLUMN handler TEXT;
                -- The expiry scheduler looks for live grants past their lifetime.
                CREATE INDEX preferences_expiry ON preferences(expires_at) WHERE state = 'granted' AND expires_at IS NOT NULL;

                -- Keyed hashes (HMAC) of erased people's emails: proof of the
                -- erasure, and a block on adding them back without fresh consent.
                CREATE TABLE suppressions (
                    email_hash BLOB PRIMARY KEY NOT NULL,
                    contact_id TEXT NOT NULL REFERENCES contacts(id),
                    erased_at INTEGER NOT NULL,
                    reason TEXT NOT NULL,
                    erased_by TEXT NOT NULL
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("0008_segments_and_repermission") { db in
            try db.execute(sql: """
                ALTER TABLE topics ADD COLUMN repermission_days INTEGER CHECK (repermission_days > 0);

                -- Saved audience definitions, and their size once a day.
                CREATE TABLE segments (
                    id TEXT PRIMARY KEY NOT NULL,
                    name TEXT NOT NULL,
                    description TEXT NOT NULL,
                    definition TEXT NOT NULL,
                    created_by TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                ) WITHOUT ROWID;
                CREATE TABLE segment_sizes (
                    segment_id TEXT NOT NULL REFERENCES segments(id) ON DELETE CASCADE,
                    day TEXT NOT NULL,
                    size INTEGER NOT NULL,
                    measured_at INTEGER NOT NULL,
                    PRIMARY KEY (segment_id, day)
                ) WITHOUT ROWID;

                -- One re-permission email per grant: the key is the grant's expiry.
                CREATE TABLE repermission_requests (
                    contact_id TEXT NOT NULL REFERENCES contacts(id),
                    topic_key TEXT NOT NULL REFERENCES topics(key),
                    grant_expires_at INTEGER NOT NULL,
                    sent_at INTEGER NOT NULL,
                    outbox_id TEXT NOT NULL,
                    PRIMARY KEY (contact_id, topic_key, grant_expires_at)
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("0009_webhooks") { db in
            try db.execute(sql: """
                CREATE TABLE webhook_endpoints (
                    id TEXT PRIMARY KEY NOT NULL,
                    url TEXT NOT NULL,
                    description TEXT NOT NULL,
                    events TEXT NOT NULL,
                    topics TEXT NOT NULL,
                    sources TEXT NOT NULL,
                    enabled INTEGER NOT NULL,
                    allow_private_network INTEGER NOT NULL,
                    sealed_secret BLOB NOT NULL,
                    created_by TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                ) WITHOUT ROWID;

                -- The ordinal orders deliveries: one contact's reach an endpoint in this order.
                CREATE TABLE webhook_deliveries (
                    ordinal INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
                    event_type TEXT NOT NULL,
                    contact_id TEXT,
                    payload BLOB NOT NULL,
                    status TEXT NOT NULL,
                    attempts INTEGER NOT NULL,
                    next_attempt_at INTEGER NOT NULL,
                    created_at INTEGER NOT NULL,
                    delivered_at INTEGER,
                    last_status_code INTEGER,
                    last_error TEXT
                );
                CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
                CREATE INDEX webhook_deliveries_order ON webhook_deliveries(endpoint_id, contact_id, ordinal) WHERE status = 'pending';
                CREATE INDEX webhook_deliveries_log ON webhook_deliveries(endpoint_id, created_at);
                CREATE INDEX webhook_deliveries_contact ON webhook_deliveries(contact_id);

                CREATE TABLE webhook_attempts (
                    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
                    number INTEGER NOT NULL,
                    at INTEGER NOT NULL,
                    status_code INTEGER,
                    latency_ms INTEGER NOT NULL,
                    response TEXT,
                    error TEXT,
                    PRIMARY KEY (delivery_id, number)
                ) WITHOUT ROWID;
                """)
        }
        // The weekly and funnel reports read a period of events by when they happened.
        migrator.registerMigration("0010_event_time_index") { db in
            try db.execute(sql: "CREATE INDEX consent_events_occurred_at ON consent_events(occurred_at)")
        }
        migrator.registerMigration("0011_verify_runs") { db in
            try db.execute(sql: """
                CREATE TABLE verify_runs (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    finished_at INTEGER NOT NULL,
                    seconds REAL NOT NULL,
                    contacts INTEGER NOT NULL,
                    events INTEGER NOT NULL,
                    breaks INTEGER NOT NULL,
                    origin TEXT NOT NULL)
                """)
        }
        // The send-time checks look contacts up by address for their id: with the id in the
        // address index, a check reads two b-trees (this index, preferences) rather than three
        // (the unique address index, then the contact's row for its id). 10,000 addresses on
        // 200,000 contacts: a quarter less time in SQLite. The checks name it (`INDEXED BY`):
        // without statistics SQLite's planner prefers the unique index.
        migrator.registerMigration("0012_check_index") { db in
            try db.execute(sql: "CREATE INDEX contacts_email_id ON contacts(email, id)")
        }
        return migrator
    }
}
