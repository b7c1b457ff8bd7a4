-- oxroot registry, schema version 1. Records are stored in the registry's record encoding
-- (store/codec.rs) in `record`; the columns beside them are what the store filters, orders,
-- guards or adds up. Keys compare bytewise (COLLATE "C"), the order the embedded store lists in.
-- Only statements CockroachDB and YugabyteDB accept as well.

CREATE TABLE registry_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    audit_seq bigint NOT NULL,
    audit_hash bytea NOT NULL,
    event_seq bigint NOT NULL
);
INSERT INTO registry_head (singleton, audit_seq, audit_hash, event_seq)
VALUES (true, 0, decode('0000000000000000000000000000000000000000000000000000000000000000', 'hex'), 0);

CREATE TABLE devices (
    device_id text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL,
    owner text COLLATE "C",
    batch_id text COLLATE "C",
    state text NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX devices_by_batch ON devices (batch_id, device_id);
CREATE INDEX devices_by_owner ON devices (owner, device_id);

CREATE TABLE policies (
    owner text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (owner, name)
);

CREATE TABLE batches (
    batch_id text COLLATE "C" PRIMARY KEY,
    owner text COLLATE "C" NOT NULL,
    policy_name text COLLATE "C" NOT NULL,
    record bytea NOT NULL,
    total bigint NOT NULL,
    awaiting_registration bigint NOT NULL,
    registered bigint NOT NULL,
    onboarded bigint NOT NULL,
    reonboard_pending bigint NOT NULL,
    revoked bigint NOT NULL,
    refusals bigint NOT NULL
);
CREATE INDEX batches_by_owner ON batches (owner, batch_id);

CREATE TABLE credentials (
    serial text COLLATE "C" PRIMARY KEY,
    record bytea NOT NULL
);

CREATE TABLE operator_certificates (
    serial text COLLATE "C" PRIMARY KEY,
    owner text COLLATE "C" NOT NULL,
    revoked boolean NOT NULL,
    record bytea NOT NULL
);

CREATE TABLE crl_entries (
    issuer text COLLATE "C" NOT NULL,
    serial text COLLATE "C" NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (issuer, serial)
);

CREATE TABLE crls (
    issuer text COLLATE "C" PRIMARY KEY,
    number bigint NOT NULL,
    record bytea NOT NULL
);

CREATE TABLE owners (
    name text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL,
    record bytea NOT NULL
);

CREATE TABLE request_ids (
    owner text COLLATE "C" NOT NULL,
    request_id text COLLATE "C" NOT NULL,
    batch_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (owner, request_id)
);

CREATE TABLE scheduled_revocations (
    serial text COLLATE "C" PRIMARY KEY,
    due bigint NOT NULL
);
CREATE INDEX scheduled_revocations_by_due ON scheduled_revocations (due, serial);

CREATE TABLE audit (
    seq bigint PRIMARY KEY,
    entry bytea NOT NULL
);

CREATE TABLE events (
    seq bigint PRIMARY KEY,
    payload bytea NOT NULL
);
