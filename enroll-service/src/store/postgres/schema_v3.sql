-- oxroot registry, schema version 3: staged firmware rollouts. A rollout's record is rewritten
-- by operator steps only (compare-and-set on `version`); devices' reports are rows of their own,
-- one per device (the primary key), counted into `installed` / `failed` in the same savepoint.

CREATE TABLE rollouts (
    owner text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    installed bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    record bytea NOT NULL,
    PRIMARY KEY (owner, id)
);

CREATE TABLE rollout_reports (
    owner text COLLATE "C" NOT NULL,
    rollout_id text COLLATE "C" NOT NULL,
    device_id text COLLATE "C" NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (owner, rollout_id, device_id)
);
