-- Where each persistence consumer stands in its stream: every message it reads up to last_seq is done (its
-- rows stored, or the message handed to the retries or dead-lettered). Written in the same transaction as
-- the rows, so a restart resumes right after what was committed (the exactly-once sink pattern).

CREATE TABLE consumer_positions (
    consumer    text   NOT NULL,
    stream      text   NOT NULL,
    last_seq    bigint NOT NULL CHECK (last_seq >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, stream)
);
