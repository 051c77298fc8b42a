-- Fleet-wide events (probe/analysis/fleet_events.py), found by the collector's periodic job.
-- One row per event: a blocking type of a service in one network (an ASN, or a country when
-- asn = ''). The id is deterministic, so a job that runs again (after a restart, or on another
-- collector) updates the same rows. No probe ids: counts and shares only.
CREATE TABLE fleet_events (
    id          text             PRIMARY KEY,
    scope       text             NOT NULL CHECK (scope IN ('asn', 'cc')),
    network     text             NOT NULL,
    cc          text             NOT NULL,
    asn         text             NOT NULL,
    service     text             NOT NULL,
    type        text             NOT NULL,
    start_time  timestamptz      NOT NULL,
    start_low   timestamptz      NOT NULL,
    start_high  timestamptz      NOT NULL,
    end_time    timestamptz,
    end_low     timestamptz,
    end_high    timestamptz,
    probes      integer          NOT NULL,
    reporting   integer          NOT NULL,
    share       double precision NOT NULL,
    detected_at timestamptz      NOT NULL,
    updated_at  timestamptz      NOT NULL
);
CREATE INDEX fleet_events_open ON fleet_events (service, cc, asn) WHERE end_time IS NULL;
CREATE INDEX fleet_events_start ON fleet_events (start_time);
-- The job reads new measurements by arrival time: index it (every partition gets one).
CREATE INDEX measurements_received_at ON measurements (received_at);
