-- Tenants, users and their roles.

CREATE TABLE tenants (
    id          UUID PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

-- The roles of SPEC §5.1. Their permissions are decided in code (identity::roles); this table
-- keeps user_roles honest.
CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL
);

INSERT INTO roles (name, description) VALUES
    ('admin', 'Every permission'),
    ('operator', 'Runs orders, print jobs, shipments and mappings day to day'),
    ('viewer', 'Reads everything except the audit log');

-- E-mail addresses are stored lower-cased and are unique across tenants: login takes no tenant.
CREATE TABLE users (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL REFERENCES tenants (id),
    email           TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL DEFAULT '',
    password_hash   TEXT NOT NULL,
    is_super_admin  BOOLEAN NOT NULL DEFAULT FALSE,
    is_active       BOOLEAN NOT NULL DEFAULT TRUE,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE INDEX users_tenant_id ON users (tenant_id);

CREATE TABLE user_roles (
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_name   TEXT NOT NULL REFERENCES roles (name),
    PRIMARY KEY (user_id, role_name)
);
