-- Users, balances, the deposit inbox (durable before the webhook answers) and the ledger.
CREATE TABLE users (
    user_id     text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE balances (
    user_id     text NOT NULL REFERENCES users (user_id),
    currency    char(3) NOT NULL,
    amount      numeric(32, 8) NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, currency)
);

-- One row per webhook event. `pending` until a worker credits it (`done`), parks it for
-- an unknown user (`unmatched`) or gives up after its retries (`dead`).
CREATE TABLE deposit_inbox (
    tx_id               uuid PRIMARY KEY,
    provider            text NOT NULL,
    event_id            text NOT NULL,
    user_id             text NOT NULL,
    amount              numeric(20, 8) NOT NULL CHECK (amount > 0),
    currency            char(3) NOT NULL,
    provider_reference  text NOT NULL,
    payload             bytea NOT NULL,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'done', 'unmatched', 'dead')),
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    received_at         timestamptz NOT NULL DEFAULT now(),
    relayed_at          timestamptz,
    processed_at        timestamptz,
    CONSTRAINT deposit_inbox_event UNIQUE (provider, event_id)
);
CREATE INDEX deposit_inbox_pending ON deposit_inbox (received_at) WHERE status = 'pending';
CREATE INDEX deposit_inbox_unmatched ON deposit_inbox (user_id) WHERE status = 'unmatched';

-- Exactly one entry per transaction: the UNIQUE is the last line of defence against a
-- double credit.
CREATE TABLE ledger_entries (
    entry_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id       uuid NOT NULL UNIQUE REFERENCES deposit_inbox (tx_id),
    user_id     text NOT NULL REFERENCES users (user_id),
    amount      numeric(20, 8) NOT NULL CHECK (amount > 0),
    currency    char(3) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_user ON ledger_entries (user_id);
