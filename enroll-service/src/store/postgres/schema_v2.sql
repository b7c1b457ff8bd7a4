-- oxroot registry, schema version 2: firmware releases. Each owner's firmware-signing key, and
-- the images it signed (the signed MCUboot file beside its record). Records are JSON
-- (store/codec.rs, encode_json).

CREATE TABLE firmware_signers (
    owner text COLLATE "C" PRIMARY KEY,
    record bytea NOT NULL
);

CREATE TABLE firmware (
    owner text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    version text COLLATE "C" NOT NULL,
    record bytea NOT NULL,
    image bytea NOT NULL,
    PRIMARY KEY (owner, name, version)
);
