"""End-to-end support: cluster providers (kwok, kind, existing), the dev cluster command, e2e tests."""
