-- The central store, version 1: enrolment tokens, enrolled probes, measurements partitioned by day.
-- Secrets are never stored: token_hash and credential_hash are SHA-256 of 256-bit random values.
-- No column holds a client address.

CREATE TABLE enrol_tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    label       text        NOT NULL,
    token_hash  bytea       NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE probes (
    probe_id        text        PRIMARY KEY,
    token_id        bigint      NOT NULL REFERENCES enrol_tokens (id),
    credential_hash bytea       NOT NULL UNIQUE,
    enrolled_at     timestamptz NOT NULL DEFAULT now()
);

-- day is the UTC day of measurement_uid's UUIDv7 timestamp: a function of the uid, so the primary
-- key (day, measurement_uid), which must include the partition key, is unique on the uid alone.
CREATE TABLE measurements (
    day                     date        NOT NULL,
    measurement_uid         uuid        NOT NULL,
    probe_id                text        NOT NULL,
    probe_cc                text        NOT NULL,
    probe_asn               text        NOT NULL,
    test_name               text        NOT NULL,
    input                   text,
    service                 text,
    measurement_start_time  timestamptz NOT NULL,
    received_at             timestamptz NOT NULL DEFAULT now(),
    body                    jsonb       NOT NULL,
    PRIMARY KEY (day, measurement_uid)
) PARTITION BY RANGE (day);
